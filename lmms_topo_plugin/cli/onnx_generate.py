"""``topo-prune onnx-generate``: answer one prompt with an ONNX build."""

from __future__ import annotations

import argparse

from lmms_topo_plugin.errors import UsageError

NAME = "onnx-generate"
HELP = "answer one prompt with an ONNX build (ONNX Runtime)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build", help="a directory written by topo-prune export --onnx")
    parser.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    parser.add_argument("--prompt", required=True, help="the question (the chat template wraps it; an image goes "
                        "where the build's family puts it)")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=32,
                        help="greedy tokens generated at most (stops at the end-of-sequence token)")
    parser.add_argument("--provider", default="auto", help="auto (CUDA when onnxruntime-gpu sees a GPU), cuda, cpu")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16 or int4 (as exported)")
    parser.add_argument("--allow-cpu-fallback", action="store_true",
                          help="accept a session that ONNX Runtime put on the CPU instead of the requested provider")
    parser.add_argument("--benchmark", action="store_true", help="after the answer, print the prefill latency, "
                          "the decode latency per token and tokens per second (medians of --repeats runs after a "
                          "warm-up, each decoding --max-new-tokens tokens), with the provider and precision")
    parser.add_argument("--repeats", type=int, default=5, help="with --benchmark: timed runs (default 5)")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM, check_build
    from lmms_topo_plugin.models.prompting import Prompt

    check_build(args.build)
    if args.benchmark and (args.repeats < 1 or args.max_new_tokens < 1):
        raise UsageError("--benchmark needs --repeats and --max-new-tokens of at least 1")
    images = [read_image(path) for path in args.image]
    runner = OnnxVLM(args.build, provider=args.provider, allow_cpu_fallback=args.allow_cpu_fallback,
                     precision=args.precision)
    prompt = Prompt.from_text(args.prompt, images)
    (text,) = runner.generate([prompt], max_new_tokens=args.max_new_tokens)
    print(text)
    if args.benchmark:
        costs = runner.benchmark(prompt, args.max_new_tokens, args.repeats)
        print(f"benchmark: provider {runner.device_type}, precision {args.precision}, {costs['prompt_tokens']} prompt "
              f"tokens, {costs['new_tokens']} new tokens, medians of {costs['repeats']} runs after a warm-up")
        print(f"prefill: {costs['prefill_s'] * 1e3:.3f} ms")
        print(f"decode: {costs['decode_s_per_token'] * 1e3:.3f} ms/token")
        print(f"throughput: {costs['tokens_per_s']:.1f} tokens/s")
    return 0


def read_image(path: str):
    """The image file at ``path``, decoded; a one-line :class:`UsageError` for a missing file or a non-image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise UsageError(f"--image {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--image {path} is a directory; give an image file (PNG, JPEG, ...)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):  # PIL's decoders raise all of these
        raise UsageError(f"--image {path} is not an image file Pillow can read; give a PNG or JPEG (topo-prune "
                         "example-image writes one)") from None
