"""Time the instructor's answers against torch's native kernels on realistic decoder layers.

    .venv/bin/python benchmarks/solutions_vs_torch.py [--repeats 9] [--batch 16]

Each answer comes from its notebook in ``solutions/`` (through the one notebook loader,
``autograder.notebook.load_namespace``). For every layer the two implementations run
interleaved in this one process (warm-up, then torch, answer, torch, answer, ...), forward
alone and forward + backward, and the table gives the median times and their ratio
(answer / torch). The goal is a ratio within 2 everywhere. Not a test: timings depend on
the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from autograder.notebook import load_namespace

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"


@dataclass
class Layer:
    """One benchmarked call: its name, its inputs and the two implementations."""

    name: str
    inputs: list[torch.Tensor]
    torch_call: Callable[..., torch.Tensor]
    answer_call: Callable[..., torch.Tensor]


def decoder_layers(batch: int) -> list[Layer]:
    ns1 = load_namespace(SOLUTIONS / "01_conv_transpose1d" / "conv_transpose1d.ipynb")
    ns2 = load_namespace(SOLUTIONS / "02_conv_transpose2d" / "conv_transpose2d.ipynb")
    ns3 = load_namespace(SOLUTIONS / "03_interpolate" / "interpolate.ipynb")
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    layers = []
    # DCGAN's generator (Radford et al.): 100 -> 512 on 1x1 (4x4 kernel, stride 1), then
    # 4x4 kernels with stride 2 and padding 1, doubling the size at each layer.
    dcgan = [(100, 512, 1, 1, 0), (512, 256, 4, 2, 1), (256, 128, 8, 2, 1), (128, 64, 16, 2, 1)]
    dcgan.append((64, 3, 32, 2, 1))
    for c_in, c_out, size, stride, padding in dcgan:
        kwargs = {"stride": stride, "padding": padding}
        layers.append(
            Layer(
                f"conv_transpose2d {c_in}->{c_out}, {size}x{size}, w=4 s={stride} p={padding}",
                [randn(batch, c_in, size, size), randn(c_in, c_out, 4, 4) * 0.05, randn(c_out)],
                lambda x, w, b, kw=kwargs: F.conv_transpose2d(x, w, b, **kw),
                lambda x, w, b, kw=kwargs: ns2["conv_transpose2d"](x, w, b, **kw),
            )
        )
    # 1-d decoders: WaveGAN-like (w=25, s=4) and a small 4/2/1 upsampler on a long signal.
    for c_in, c_out, length, w, stride, padding, out_pad in [
        (256, 128, 256, 25, 4, 11, 1),
        (64, 32, 2048, 4, 2, 1, 0),
    ]:
        kwargs = {"stride": stride, "padding": padding, "output_padding": out_pad}
        layers.append(
            Layer(
                f"conv_transpose1d {c_in}->{c_out}, L={length}, w={w} s={stride} p={padding}",
                [randn(batch, c_in, length), randn(c_in, c_out, w) * 0.05, randn(c_out)],
                lambda x, w, b, kw=kwargs: F.conv_transpose1d(x, w, b, **kw),
                lambda x, w, b, kw=kwargs: ns1["conv_transpose1d"](x, w, b, **kw),
            )
        )
    image = randn(8, 64, 64, 64)
    for mode in ("bilinear", "nearest"):
        layers.append(
            Layer(
                f"interpolate x2 {mode}, 8x64x64x64",
                [image],
                lambda x, m=mode: F.interpolate(x, scale_factor=2, mode=m),
                lambda x, m=mode: ns3["interpolate"](x, scale_factor=2, mode=m),
            )
        )
    return layers


def timed(call: Callable[..., torch.Tensor], inputs: list[torch.Tensor], backward: bool) -> float:
    """Seconds for one forward (and backward) pass of ``call``."""
    if backward:
        leaves = [t.detach().requires_grad_(True) for t in inputs]
        start = time.perf_counter()
        out = call(*leaves)
        out.backward(torch.ones_like(out))
        return time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        call(*inputs)
        return time.perf_counter() - start


def compare(layer: Layer, backward: bool, repeats: int) -> tuple[float, float]:
    """Median seconds of torch and of the answer, measured alternately (A, B, A, B, ...)."""
    for _ in range(2):  # warm-up: allocator, thread pool, oneDNN primitive caches
        timed(layer.torch_call, layer.inputs, backward)
        timed(layer.answer_call, layer.inputs, backward)
    torch_times, answer_times = [], []
    for _ in range(repeats):
        torch_times.append(timed(layer.torch_call, layer.inputs, backward))
        answer_times.append(timed(layer.answer_call, layer.inputs, backward))
    return statistics.median(torch_times), statistics.median(answer_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per side (median)")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the conv layers")
    args = parser.parse_args()

    layers = decoder_layers(args.batch)
    for layer in layers:  # never time a wrong answer
        with torch.no_grad():
            expected, actual = layer.torch_call(*layer.inputs), layer.answer_call(*layer.inputs)
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"median of {args.repeats} interleaved runs"
    )
    header = f"{'layer':<52} {'pass':<9} {'torch ms':>9} {'answer ms':>10} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for layer in layers:
        for backward in (False, True):
            torch_s, answer_s = compare(layer, backward, args.repeats)
            ratio = answer_s / torch_s
            worst = max(worst, ratio)
            name = "fwd+bwd" if backward else "forward"
            print(
                f"{layer.name:<52} {name:<9} {torch_s * 1e3:>9.2f} {answer_s * 1e3:>10.2f} "
                f"{ratio:>6.2f}"
            )
    print(f"worst ratio: {worst:.2f} (goal: within 2)")


if __name__ == "__main__":
    main()
