"""bf16 emulated at fp32 speed: the matrix kernels give the correctly rounded bf16 result (bf16 operands, exact
accumulation, one rounding), as native bf16 kernels do, and nothing else changes."""
import pytest
import torch
import torch.nn.functional as F

from cnnlab.core.precision import emulated_bf16, resolve_precision

BF = torch.bfloat16


def assert_correctly_rounded(out: torch.Tensor, ref: torch.Tensor) -> None:
    """`out` is `ref` (bf16 values) but where fp32 accumulation differs from exact: by one bf16 step where a sum lies
    near a rounding boundary, by fp32's error (relative to the largest output) where terms cancel."""
    out, ref = out.float(), ref.float()
    err = (out - ref).abs()
    assert (err <= ref.abs() * 2 ** -7 + 1e-5 * ref.abs().max()).all()
    assert (err == 0).float().mean() > 0.999


def correctly_rounded(op, *operands):
    """The op in float64 on the bf16 operands, rounded once to bf16: what an exact-accumulation bf16 kernel returns."""
    return op(*(t.to(BF).double() for t in operands)).to(BF)


OPS = {
    "conv2d": (lambda x, w: F.conv2d(x, w, stride=2, padding=1), (8, 16, 14, 14), (32, 16, 4, 4)),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1), (8, 32, 7, 7), (32, 16, 4, 4)),
    "linear": (F.linear, (64, 110), (256, 110)),
}


@pytest.mark.parametrize("name", OPS)
def test_forward_is_the_correctly_rounded_bf16_result(name):
    op, xs, ws = OPS[name]
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(xs, generator=g), torch.randn(ws, generator=g) * 0.05
    with emulated_bf16(), torch.autocast("cpu", dtype=BF):
        out = op(x, w)
    assert out.dtype == BF  # autocast's choice stands
    ref = correctly_rounded(op, x, w)
    assert_correctly_rounded(out, ref)


def test_backward_gradients_are_the_correctly_rounded_bf16_gradients():
    op, xs, ws = OPS["conv_transpose2d"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(xs, generator=g).requires_grad_()
    w = torch.randn(ws, generator=g).mul_(0.05).requires_grad_()
    with emulated_bf16():
        with torch.autocast("cpu", dtype=BF):
            out = op(x, w)
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    # the reference: the same loss in float64 on the bf16 operands, its upstream gradient rounded to bf16 as autocast's
    xd, wd = x.detach().to(BF).double().requires_grad_(), w.detach().to(BF).double().requires_grad_()
    outd = op(xd, wd)
    outd.backward(torch.linspace(-1, 1, outd.numel()).view(outd.shape).to(BF).double())
    for mine, ref in ((x.grad, xd.grad), (w.grad, wd.grad)):
        assert mine.dtype == torch.float32  # the fp32 leaves get fp32 gradients (bf16 values widened)
        assert torch.equal(mine, mine.to(BF).float())  # bf16 values
        assert_correctly_rounded(mine, ref.to(BF))


def test_fp32_and_other_ops_are_untouched():
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(4, 3, 9, 9, generator=g), torch.randn(5, 3, 3, 3, generator=g)
    plain = torch.tanh(F.batch_norm(F.conv2d(x, w), None, None, training=True))
    with emulated_bf16():
        inside = torch.tanh(F.batch_norm(F.conv2d(x, w), None, None, training=True))
    assert torch.equal(plain, inside)


def test_resolve_precision():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "meta") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")
