"""The compilation stage: export a trained (or pruned) model, compile it for a target, verify and time it.

- :mod:`.export`: TorchScript packed for SageMaker Neo, and ONNX;
- :mod:`.backends`: ONNX Runtime (fp32 and static int8), OpenVINO, AOTInductor, TVM, TorchScript;
- :mod:`.neo`: a SageMaker Neo compilation job for a named target device;
- :mod:`.stage`: ``python -m glister_train compile``.
"""
