"""Running an ONNX Runtime session through IOBinding, with its input and output buffers kept on the
session's device (a GPU) and reused from one batch to the next.

Why: `session.run` with numpy arrays allocates the input and output on the GPU on every call, copies the
input in, synchronizes, and copies the logits back; for these small models at batch 1 that bookkeeping is
of the order of the model's own GPU time. Bound buffers cost one host-to-device copy in and one copy out,
and their fixed addresses are what a CUDA graph replays against (ORT's `enable_cuda_graph` requires
IOBinding with buffers that do not move).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import onnxruntime as ort

MAX_SHAPES = 8  # batch sizes whose buffers are kept (a server's dynamic batches vary; each holds N x input)


class BoundSession:
    """One session run through IOBinding on `device` ("cuda", or "cpu" where the same path is tested),
    with a pair of buffers per batch size, the least recently used dropped beyond `max_shapes`. `fixed`: the
    only batch size it runs (a CUDA-graph session, captured for one shape). One thread at a time."""

    def __init__(self, session: ort.InferenceSession, device: str = "cuda", device_id: int = 0, max_shapes=MAX_SHAPES):
        self.session, self.device, self.device_id, self.max_shapes = session, device, device_id, max_shapes
        (inp,), (out,) = session.get_inputs(), session.get_outputs()
        self.input_name, self.output_name = inp.name, out.name
        self.classes = out.shape[1] if len(out.shape) == 2 and isinstance(out.shape[1], int) else None
        self.buffers: OrderedDict[tuple, tuple] = OrderedDict()

    def _bound(self, shape: tuple[int, ...]) -> tuple:
        if shape in self.buffers:
            self.buffers.move_to_end(shape)
            return self.buffers[shape]
        x = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self.device, self.device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x)
        if self.classes is not None:
            out = (shape[0], self.classes)
            y = ort.OrtValue.ortvalue_from_shape_and_type(out, np.float32, self.device, self.device_id)
            binding.bind_ortvalue_output(self.output_name, y)
        else:  # an output shape the file does not declare: ORT allocates it on the device each run
            binding.bind_output(self.output_name, self.device, self.device_id)
        self.buffers[shape] = (binding, x)
        while len(self.buffers) > self.max_shapes:
            self.buffers.popitem(last=False)
        return self.buffers[shape]

    def run(self, inputs: np.ndarray, run_options: ort.RunOptions | None = None) -> np.ndarray:
        """Logits of `inputs` (float32 [N, ...]), a new host array (the device buffer is reused)."""
        binding, x = self._bound(tuple(inputs.shape))
        x.update_inplace(np.ascontiguousarray(inputs, dtype=np.float32))
        self.session.run_with_iobinding(binding, run_options)
        return binding.copy_outputs_to_cpu()[0]
