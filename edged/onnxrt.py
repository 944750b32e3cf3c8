"""ONNX Runtime session settings shared by edged's own ONNX models (the embedders, the RetinaFace detector)."""

from __future__ import annotations

from typing import Any


def session_options(threads: int, optimized: bool = False) -> Any:
    """`optimized`: the model is already ONNX Runtime's optimised form of itself (`optimize_for_this_machine`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, not through logging
    if threads > 1:
        # spin between the operators of one run, stop when it ends: no core burnt between frames
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options
