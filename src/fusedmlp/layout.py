"""Where each layer's weights and biases sit in a model's flat parameter buffer.

Parameters, gradients and every optimiser state of a model live in one contiguous buffer
each, laid out ``[W_0, W_1, ..., W_{L-1}, b_0, b_1, ..., b_{L-1}]`` with ``W_l`` row-major of
shape ``(n_l, n_{l+1})``: the weights first (the only entries weight decay touches), then the
biases. :class:`ParamLayout` is the one description of that layout; the model, the compiled
network (``csrc/_network.pyx``), the file format, the optimisers and the Dask helpers all
read it from here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ParamLayout"]


class ParamLayout:
    """The flat layout of an MLP with widths `sizes` (input first).

    Attributes
    ----------
    sizes : tuple of int
        The widths, from input to output.
    weight_shapes : tuple of (int, int)
        ``(n_in, n_out)`` of each layer's ``W``.
    weight_offsets, bias_offsets : tuple of int
        Where each layer's ``W`` and ``b`` start in the flat buffer.
    n_weights, n_params : int
        Entries of all weights (the prefix weight decay applies to) and of the whole buffer.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedmlp.layout import ParamLayout
    >>> layout = ParamLayout([3, 4, 2])
    >>> layout.n_weights, layout.n_params, layout.bias_offsets
    (20, 26, (20, 24))
    >>> [(W.shape, b.shape) for W, b in layout.views(np.zeros(layout.n_params))]
    [((3, 4), (4,)), ((4, 2), (2,))]
    """

    def __init__(self, sizes):
        self.sizes = tuple(int(s) for s in sizes)
        self.weight_shapes = tuple(zip(self.sizes[:-1], self.sizes[1:]))
        weight_sizes = [n_in * n_out for n_in, n_out in self.weight_shapes]
        self.n_weights = sum(weight_sizes)
        self.n_params = self.n_weights + sum(self.sizes[1:])
        self.weight_offsets = tuple(int(o) for o in np.cumsum([0] + weight_sizes[:-1]))
        self.bias_offsets = tuple(self.n_weights + int(o)
                                  for o in np.cumsum([0, *self.sizes[1:-1]]))

    @property
    def n_layers(self) -> int:
        return len(self.weight_shapes)

    def views(self, flat) -> list:
        """``[(W_0, b_0), ...]``: views of a flat buffer of ``n_params`` entries."""
        if flat.shape != (self.n_params,):
            raise ValueError(f"a flat parameter buffer must have shape ({self.n_params},), "
                             f"got {flat.shape}")
        out = []
        for (n_in, n_out), w_at, b_at in zip(self.weight_shapes, self.weight_offsets,
                                              self.bias_offsets):
            out.append((flat[w_at:w_at + n_in * n_out].reshape(n_in, n_out),
                        flat[b_at:b_at + n_out]))
        return out

    def __eq__(self, other):
        return isinstance(other, ParamLayout) and other.sizes == self.sizes

    def __hash__(self):
        return hash(self.sizes)

    def __repr__(self):
        return f"ParamLayout({list(self.sizes)})"
