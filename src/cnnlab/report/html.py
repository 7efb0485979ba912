"""The static report page: one section per experiment with the report's claim beside cnnlab's result, tables,
figures (files beside the page), the exact settings and the wall time. No server, no CDN, no script."""
from __future__ import annotations

import json
from html import escape
from urllib.parse import quote

CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-top:1px solid #ddd;padding-top:1em} h3{margin:.6em 0 .3em;font-size:1em}
.meta{color:#666;font-size:.9em} .claim{border-left:4px solid #999;background:#f6f6f6;padding:.4em .8em;margin:.5em 0}
.result{border-left:4px solid #2a7;background:#eef8f1;padding:.4em .8em;margin:.5em 0}
.failed .result{border-color:#c33;background:#fbeeee}
.status{font-size:.8em;padding:.1em .5em;border-radius:.8em;background:#2a7;color:#fff;vertical-align:middle}
.failed .status,.toc .failed{background:#c33;color:#fff}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.9em} td,th{border:1px solid #ccc;padding:.2em .6em}
th{background:#f0f0f0} figure{display:inline-block;margin:.4em 1em .8em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:.85em;color:#555;max-width:60ch}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.85em} .note{color:#a60}
.toc td{border:none;padding:.1em .6em}
"""


def slug(exp_id: str) -> str:
    return exp_id.replace("/", "-").replace(".", "_")


def _cell(v) -> str:
    s = str(v)
    if s.startswith("**") and s.endswith("**"):
        return f"<b>{escape(s[2:-2])}</b>"
    return escape(s)


def _table(t: dict) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in t["columns"])
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in t["rows"])
    return f"<h3>{escape(t['title'])}</h3><table><tr>{head}</tr>{body}</table>"


def _figure(f: dict) -> str:
    return (f'<figure><a href="{quote(f["path"])}"><img src="{quote(f["path"])}" alt="{escape(f["caption"])}"></a>'
            f"<figcaption>{escape(f['caption'])}</figcaption></figure>")


def _section(e: dict) -> str:
    ok = e["status"] == "ok"
    cached = " · cached" if e.get("cached") else ""
    parts = [f'<section id="{slug(e["id"])}" class="experiment{"" if ok else " failed"}" data-id="{escape(e["id"])}">',
             f'<h2>{escape(e["id"])} — {escape(e["title"])} <span class="status">{escape(e["status"])}</span></h2>',
             f'<p class="meta">{escape(e["section"])} · mode {escape(e.get("mode", "?"))} · '
             f'wall time {e["wall_s"]:.1f} s{cached}</p>',
             f'<div class="claim"><b>Report:</b> {escape(e["claim"])}</div>']
    if ok:
        parts.append(f'<div class="result"><b>cnnlab:</b> {escape(e["result"])}</div>')
        parts += [f'<p class="note">{escape(n)}</p>' for n in e.get("notes", [])]
        parts += [_table(t) for t in e.get("tables", [])]
        parts += [_figure(f) for f in e.get("figures", [])]
    else:
        parts.append(f'<div class="result"><b>Failed:</b> {escape(e["error"])} '
                     f'(traceback in {escape(e["id"].replace("/", "_"))}/error.txt)</div>')
    settings = json.dumps(e.get("settings", {}), indent=2, sort_keys=True)
    parts.append(f"<details><summary>Settings</summary><pre>{escape(settings)}</pre></details></section>")
    return "\n".join(parts)


def render(results: dict) -> str:
    """The page for a results.json object."""
    exps = results["experiments"]
    env = results["environment"]
    toc = "".join(f'<tr><td><a href="#{slug(e["id"])}">{escape(e["id"])}</a></td><td>{escape(e["title"])}</td>'
                  f'<td class="{"" if e["status"] == "ok" else "failed"}">{escape(e["status"])}</td></tr>'
                  for e in exps)
    n_ok = sum(e["status"] == "ok" for e in exps)
    machine = ", ".join(f"{k} {v}" for k, v in env.items() if v is not None)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cnnlab — the lab report, reproduced</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><h1>cnnlab — the lab report, reproduced</h1>
<p class="meta">{n_ok} of {len(exps)} experiments ok · generated {escape(results["created"])} by
<code>cnnlab reproduce</code> · {escape(machine)} · every number is also in <a href="results.json">results.json</a></p>
<table class="toc">{toc}</table>
{"".join(_section(e) for e in exps)}
</body></html>
"""
