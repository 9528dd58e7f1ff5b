"""Precision variants of an fp32 graph: ``*_fp16.onnx`` (float16 weights and compute, float32 inputs and outputs)
and ``*_q4.onnx`` (int4 weight-only ``MatMulNBits``, block size 32, symmetric), both with ONNX Runtime's tools."""

from __future__ import annotations

import logging
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int4")
SUFFIX = {"fp32": "", "fp16": "_fp16", "int4": "_q4"}
Q4_BLOCK_SIZE = 32


def variant_name(file: str, precision: str) -> str:
    """``decoder_model_merged.onnx`` → ``decoder_model_merged_fp16.onnx`` / ``..._q4.onnx``."""
    stem = file.removesuffix(".onnx")
    return f"{stem}{SUFFIX[precision]}.onnx"


def write_variant(fp32_path: Path, precision: str) -> Path:
    """Write the ``precision`` variant next to ``fp32_path``; returns its path."""
    import onnx

    target = fp32_path.with_name(variant_name(fp32_path.name, precision))
    model = onnx.load(str(fp32_path))
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True)
    elif precision == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer, logger

        logger.setLevel(logging.WARNING)  # it logs every node at INFO
        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=Q4_BLOCK_SIZE, is_symmetric=True)
        quantizer.process()
        model = quantizer.model.model
    else:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS[1:])}")
    if (fp32_path.parent / f"{fp32_path.name}.data").exists():  # large: its weights in <target>.data too
        onnx.save(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{target.name}.data")
    else:
        onnx.save(model, str(target))
    return target
