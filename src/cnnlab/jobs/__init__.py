"""The jobs, one module each: its config, its result, the public function and its one per-chunk worker. Jobs compose
the capabilities (`transfer/`, `explain/`, `gan/`), which never import each other; per-image jobs run on the one
runner (`core/runner.py`)."""
