# Type stub of the compiled module fusedmlp._network (csrc/_network.pyx, csrc/_embed.pxi): the
# whole training step and inference of an MLP, one call each. Arrays are the model's dtype
# (float32 or float64) unless noted; optional ones are None. tests/test_typing.py checks that
# this stub names exactly the module's public names.
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.floating[Any]]

BLAS: Dict[str, Any]
INFERENCE_CHUNK: int

def most_concurrent_calls(reset: bool = False) -> int: ...
def infer_into(network: Network, X: Any, out: Optional[Any],
               output: int) -> Union[_Float, int, None]: ...
def c_loop(mlp: Any, X: _Float, out: _Float, repeats: int, gemm_only: bool = False) -> int: ...

class Network:
    is_double: bool
    loss: float
    def __init__(self, sizes: Sequence[int], activations: Sequence[int], loss: int,
                 params: _Float, grads: _Float) -> None: ...
    def set_workspace(self, max_batch: int, acts: _Float, delta_a: _Float, delta_b: _Float,
                      scratch: npt.NDArray[np.float64]) -> None: ...
    @property
    def max_batch(self) -> int: ...
    def train_step(self, X: _Float, labels: Optional[npt.NDArray[np.int64]],
                   targets: Optional[_Float], weights: Optional[_Float], total_weight: float,
                   opt_kind: int, hyper: npt.NDArray[np.float64], state_a: Optional[_Float],
                   state_b: Optional[_Float]) -> int: ...
    def train_epoch(self, X: _Float, labels: Optional[npt.NDArray[np.int64]],
                    targets: Optional[_Float], weights: Optional[_Float],
                    order: npt.NDArray[np.int64], first: int, stop: int, batch_size: int,
                    opt_kind: int, hyper: npt.NDArray[np.float64], state_a: Optional[_Float],
                    state_b: Optional[_Float], gather_buffers: tuple,
                    validation: Optional[tuple], results: npt.NDArray[np.float64]) -> int: ...
    def predict(self, X: _Float, out: _Float, buffers: _Float, chunk: int,
                output: int) -> int: ...
    def matmuls_only(self, X: _Float, repeats: int) -> None: ...
