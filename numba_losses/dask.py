r"""Dask arrays in, Dask arrays out: every loss, chunk by chunk, on the workers.

When any input of a loss call (or ``out_grad``) is a ``dask.array.Array``,
:meth:`numba_losses.Loss._run` hands the call to :func:`run_dask` instead of
converting it to one in-memory array. The call returns Dask arrays whose
shapes, dtypes and chunks are known before anything runs (they come from
:meth:`~numba_losses.Loss.result_shapes`); each block is computed by calling
the same loss object on the blocks of the inputs, so NumPy chunks run the CPU
kernels and CuPy chunks the CUDA kernels.

The work is laid out on a *grid*: the axes of the loss's broadcast shape.
Some grid axes are *split* (they keep the chunks of the input that spans them);
every other axis is made whole inside each block (rechunked to one chunk).
Each family decides which axes may be split (docs/dask.rst has the table):

* the sample axis (``batch_axis``; CTC's batch axis; the rows of
  CosineEmbeddingLoss) is split for every family but SDMLLoss: blocks map one
  to one onto output blocks;
* the other axes of the elementwise family, and the non-class axes of
  SoftmaxCELoss and KLDivLoss, are split too. With :math:`K` the number of
  elements a row's mean runs over and :math:`K_j` the number inside block
  :math:`j`, block :math:`j` computes its own mean, which is rescaled to the
  partial sum :math:`(K_j / K)\,\mathrm{out}_j` in float64 and the partials
  are summed by a tree reduction; the gradient stays blockwise, each block
  being called with the head gradient :math:`g\,K_j / K`, which makes its
  scale :math:`w\,g / K`, the in-memory one;
* the class axis of SoftmaxCELoss and KLDivLoss(from_logits=False) may be
  chunked too: the chunks' (max, sum of exponentials) pairs and linear sums
  are merged exactly by a tree reduction, and a second blockwise pass forms
  the gradient (:mod:`numba_losses._dask_softmax`; :data:`MERGE_CLASS_CHUNKS`);
* the time and class axes of CTC and the feature axes of TripletLoss and
  CosineEmbeddingLoss are whole;
  SDMLLoss and any case the rules above do not cover (a sample weight that
  grows the output, an empty axis) run as one block, with a
  :class:`SingleBlockWarning` above :data:`SINGLE_BLOCK_WARN_BYTES`.

``dask`` is imported here only, on the first call with a Dask array.
"""

from __future__ import annotations

import copy
import functools
import importlib
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np

from ._core.request import Call, is_scalar
from ._core.request import is_dask_array as is_dask_collection
from ._core.validate import normalize_axis
from ._dask_softmax import merge_applies, reshaped, run_merged
from ._plan.ctc import CTCSpec
from ._plan.elementwise import ElementwiseSpec
from ._plan.pairwise import CosineSpec, TripletSpec
from ._plan.softmax import KLDivSpec, SoftmaxSpec, class_layout, counted_weights, spec_layout, valid_total

__all__ = ["MERGE_CLASS_CHUNKS", "SINGLE_BLOCK_WARN_BYTES", "SingleBlockWarning", "is_dask_array", "run_dask"]

#: Inputs above this many bytes that must run as one block raise a :class:`SingleBlockWarning`.
SINGLE_BLOCK_WARN_BYTES = 256 * 2**20

#: SoftmaxCELoss / KLDivLoss(from_logits=False) with ``pred``'s class axis in several chunks: merge the
#: chunks' (max, sum of exponentials) exactly (True), or rechunk the class axis to one chunk (False).
MERGE_CLASS_CHUNKS = True

_OUT_GRAD = "out_grad"


class SingleBlockWarning(UserWarning):
    """A loss over Dask arrays runs as one block (SDMLLoss, or a layout the chunking rules do not cover)."""


def is_dask_array(a: Any) -> bool:
    """True for a Dask array: a Dask collection (``_core.request``'s test, importing nothing) with chunks."""
    return is_dask_collection(a) and hasattr(a, "chunks")


@dataclass(slots=True)
class Grid:
    """How a call maps onto blocks.

    ``dims`` gives, per array argument (inputs and ``out_grad``), the grid
    axis of each of its dimensions (``None``: whole in every block);
    ``out_dims`` the same for the output. ``split`` lists the split grid
    axes, ``sample`` the one the output follows (or ``None``) and ``reduce``
    the others, whose partial values are summed, scaled by ``K_j / K`` when
    ``mean``. ``reshape`` holds inputs reshaped first (MXNet's
    ``reshape_like``); ``primary`` the input whose chunks define the split axes.
    """

    size: tuple[int, ...]
    dims: dict[str, tuple[int | None, ...]]
    out_dims: tuple[int | None, ...]
    split: tuple[int, ...] = ()
    sample: int | None = None
    reduce: tuple[int, ...] = ()
    mean: bool = False
    reshape: dict[str, tuple[int, ...]] = field(default_factory=dict)
    primary: str = "pred"
    why_whole: str = ""


def run_dask(loss: Any, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """Run ``call`` of ``loss`` lazily over Dask arrays: ``(value or None, grads or None)`` as Dask arrays.

    Parameters
    ----------
    loss : Loss
        The loss object; it is sent to the workers and called on the blocks.
    call : Call
        The bound call; at least one input or ``out_grad`` is a Dask array.

    Returns
    -------
    value : dask.array.Array or None
        The output, shape and dtype of ``loss.result_shapes(...)[0]``.
    grads : tuple of dask.array.Array or None
        One per differentiable input, in the input's shape.

    Raises
    ------
    ValueError
        A Dask input with unknown chunk sizes; ``out_grad`` that does not
        broadcast to the output; any shape error the in-memory call would raise.
    TypeError
        ``out=`` / ``grad_out=`` buffers (Dask results are new arrays).
    """
    if call.out is not None or any(b is not None for b in call.grad_out):
        raise TypeError("out= and grad_out= buffers cannot be used with Dask inputs: the results are new Dask arrays")
    cls = type(loss)
    named = {n: _host_if_listlike(a) for n, a in call.inputs.items()}
    og = _host_if_listlike(call.out_grad) if call.want_grad else None
    for n, a in (*named.items(), (_OUT_GRAD, og)):
        if is_dask_array(a) and any(math.isnan(c) for cs in a.chunks for c in cs):
            raise ValueError(
                f"{n}: a Dask array with unknown chunk sizes (NaN); call {n}.compute_chunk_sizes() first "
                "(the losses need every block's shape before anything runs)"
            )
    given = {n: a for n, a in named.items() if a is not None}
    out_sd, grad_sds = loss.result_shapes(**given)
    out_shape = tuple(out_sd.shape)
    if og is not None and not is_scalar(og):
        try:
            ok = np.broadcast_shapes(tuple(np.shape(og)), out_shape) == out_shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"out_grad has shape {tuple(np.shape(og))}, expected the output's shape {out_shape}")
    spec = loss._spec(Call(named, call.want_value, call.want_grad, og, None, call.grad_out))
    if isinstance(spec, (SoftmaxSpec, KLDivSpec)) and MERGE_CLASS_CHUNKS and merge_applies(spec, named, og):
        return run_merged(loss, spec, call, named, og, out_sd, grad_sds)
    total = None
    if isinstance(spec, SoftmaxSpec) and spec.normalization == "valid" and spec.total is None:
        loss, total = _valid_total(loss, spec, named)
    shapes = {n: tuple(np.shape(a)) for n, a in (*given.items(), (_OUT_GRAD, og)) if _is_array(a)}
    grid = _plan(spec, cls, shapes, out_shape, out_sd.dtype != np.float16)
    arrays = {n: a for n, a in (*named.items(), (_OUT_GRAD, og)) if _is_array(a)}
    if not grid.split:
        _warn_single_block(cls.__name__, arrays, grid.why_whole)
    return _execute(loss, call, grid, named, og, out_sd, grad_sds, total)


def _valid_total(loss: Any, spec: SoftmaxSpec, named: dict[str, Any]) -> tuple[Any, Any]:
    """SoftmaxCELoss(normalization='valid'): its divisor is a reduction over the whole call, not per block.

    Returns ``(loss, total)``: a copy of the loss that divides by the known
    divisor and ``None``, or the loss and the divisor as a 0-d Dask array
    (a tree sum over the label's blocks), handed to every block.
    """
    label = named["label"]
    lay = class_layout(tuple(np.shape(named["pred"])), spec.axis)
    if spec.sparse and is_dask_array(label):
        from dask.array.utils import meta_from_array

        per = label.map_blocks(
            _CountedWeights(spec, lay.n_classes),
            dtype=np.float64,
            meta=meta_from_array(label._meta, label.ndim, np.float64),
        )
        return loss, per.sum(dtype=np.float64)
    fixed = copy.copy(loss)
    fixed._valid_total = valid_total(spec, np.asarray(label) if spec.sparse else None, lay)
    return fixed, None


class _CountedWeights:
    """Per label block: the class weight of each position, 0 where ignored (picklable)."""

    def __init__(self, spec: SoftmaxSpec, n_classes: int) -> None:
        self.spec, self.n_classes = spec, n_classes

    def __call__(self, block: Any) -> Any:
        return counted_weights(self.spec, block, self.n_classes)


# ------------------------------------------------------------------------------ planning per family
def _plan(spec: Any, cls: type, shapes: dict[str, tuple[int, ...]], out_shape: tuple[int, ...], rows: bool) -> Grid:
    """The grid of a call, from the shapes alone (inputs already checked by ``result_shapes``).

    ``rows=False`` keeps rows whole (float16 results: a partial rounded to
    float16 per block would lose the precision the in-memory call keeps).
    """
    if isinstance(spec, ElementwiseSpec):
        return _plan_elementwise(spec, shapes, out_shape, rows)
    if isinstance(spec, (SoftmaxSpec, KLDivSpec)):
        return _plan_softmax(spec, shapes, out_shape, rows)
    if isinstance(spec, CTCSpec):
        return _plan_ctc(spec, shapes, out_shape)
    if isinstance(spec, TripletSpec):
        return _plan_triplet(spec, shapes, out_shape)
    if isinstance(spec, CosineSpec):
        return _plan_cosine(shapes, out_shape)
    return _whole(shapes, out_shape, f"{cls.__name__} needs the whole batch in one block", cls._inputs[0])


def _whole(shapes: dict[str, tuple[int, ...]], out_shape: tuple[int, ...], why: str, primary: str) -> Grid:
    """One block: nothing split."""
    dims = {n: (None,) * len(s) for n, s in shapes.items()}
    return Grid((), dims, (None,) * len(out_shape), primary=primary, why_whole=why)


def _align(shape: tuple[int, ...], size: tuple[int, ...], split: Sequence[int]) -> tuple[int | None, ...]:
    """Right-aligned broadcast mapping of ``shape`` onto the grid: split axes where the sizes agree."""
    lead = len(size) - len(shape)
    return tuple(
        lead + i if (lead + i) in split and lead + i >= 0 and n == size[lead + i] else None for i, n in enumerate(shape)
    )


def _out_grad_dims(shapes, out_shape, out_dims) -> dict[str, tuple[int | None, ...]]:
    """``out_grad`` follows the output's mapping where its sizes are the output's (else it is whole)."""
    if _OUT_GRAD not in shapes:
        return {}
    s = shapes[_OUT_GRAD]
    lead = len(out_shape) - len(s)
    return {_OUT_GRAD: tuple(out_dims[lead + i] if n == out_shape[lead + i] else None for i, n in enumerate(s))}


def _rows_grid(
    shapes: dict[str, tuple[int, ...]],
    out_shape: tuple[int, ...],
    size: tuple[int, ...],
    primary: str,
    candidates: Sequence[int],
    batch: int | None,
    mean: bool,
    other: dict[str, tuple[int | None, ...]] | None = None,
    reshape: dict[str, tuple[int, ...]] | None = None,
) -> Grid:
    """Grid of a loss reduced over rows (elementwise and softmax families): ``batch`` None means out is ``(1,)``."""
    if any(n == 0 for n in size):
        return _whole(shapes, out_shape, "an empty axis", primary)
    pshape = shapes[primary]
    lead = len(size) - len(pshape)
    full_in_pred = {lead + i for i, n in enumerate(pshape) if n == size[lead + i]}
    split = tuple(g for g in candidates if g in full_in_pred)
    if batch is not None and batch not in split:
        return _whole(shapes, out_shape, "pred is broadcast along the batch axis", primary)
    dims = {}
    for n, s in shapes.items():
        if n == _OUT_GRAD:
            continue
        dims[n] = (other or {}).get(n) or _align(s, size, split)
    out_dims = (batch,) if batch is not None else (None,)
    dims.update(_out_grad_dims(shapes, out_shape, out_dims))
    reduce = tuple(g for g in split if g != batch)
    why = "" if split else "rows of float16 results are kept whole"
    return Grid(size, dims, out_dims, split, batch, reduce, mean, reshape or {}, primary, why)


def _plan_elementwise(spec: ElementwiseSpec, shapes, out_shape, rows: bool) -> Grid:
    x = shapes[spec.pred]
    reshape = {}
    if spec.label_mode == "reshape" and shapes[spec.label] != x:
        reshape[spec.label] = x
        shapes = {**shapes, spec.label: x}
    size = tuple(np.broadcast_shapes(*(s for n, s in shapes.items() if n != _OUT_GRAD)))
    if spec.reduce == "all":
        every = range(len(size)) if rows else ()
        return _rows_grid(shapes, out_shape, size, spec.pred, every, None, True, reshape=reshape)
    ax = normalize_axis(spec.batch_axis, len(size))
    candidates = range(len(size)) if rows else (ax,)
    return _rows_grid(shapes, out_shape, size, spec.pred, candidates, ax, spec.reduce == "mean", reshape=reshape)


def _plan_softmax(spec: SoftmaxSpec | KLDivSpec, shapes, out_shape, rows: bool) -> Grid:
    x = shapes["pred"]
    lay = spec_layout(spec, x)
    other: dict[str, tuple[int | None, ...]] = {}
    reshape = {}
    label = shapes["label"]
    if isinstance(spec, SoftmaxSpec):
        loss_shape = lay.keep_shape
        if not spec.sparse and label != x:
            reshape["label"] = x
            shapes = {**shapes, "label": x}
    else:  # KLDivLoss(from_logits=False): the elementwise term on the log-probabilities, label broadcast
        loss_shape = x
    broadcast = ("sample_weight",) if isinstance(spec, SoftmaxSpec) else ("sample_weight", "label")
    rest = [s for n, s in shapes.items() if n in broadcast]
    size = tuple(np.broadcast_shapes(loss_shape, *rest))
    cax = len(size) - len(x) + lay.axis
    ax = normalize_axis(spec.batch_axis, len(size))
    if ax == cax:
        return _whole(shapes, out_shape, "the batch axis is the class axis", "pred")
    candidates = [g for g in range(len(size)) if g != cax and (rows or g == ax)]
    split = [g for g in candidates if g >= len(size) - len(x) and x[g - len(size) + len(x)] == size[g]]
    if isinstance(spec, SoftmaxSpec) and spec.sparse and len(label) == len(x) - 1:
        # a sparse label without the class axis: its dimensions skip it
        lead = len(size) - len(x)
        pdims = [lead + i for i in range(len(x)) if i != lay.axis]
        other["label"] = tuple(g if g in split and n == size[g] else None for g, n in zip(pdims, label, strict=True))
    mean = isinstance(spec, SoftmaxSpec) and spec.normalization == "mean"  # 'sum', 'valid': partial sums
    return _rows_grid(shapes, out_shape, size, "pred", candidates, ax, mean, other, reshape)


def _plan_ctc(spec: CTCSpec, shapes, out_shape) -> Grid:
    x = shapes["pred"]
    bax = 0 if spec.layout == "NTC" else 1
    n = x[bax]
    if out_shape != (n,) or n == 0:
        return _whole(shapes, out_shape, "sample_weight grows the output", "pred")
    lax = 0 if spec.label_layout == "NT" else 1
    dims: dict[str, tuple[int | None, ...]] = {}
    for name, s in shapes.items():
        if name == "pred":
            dims[name] = tuple(0 if i == bax else None for i in range(len(s)))
        elif name == "label":
            dims[name] = tuple(0 if i == lax else None for i in range(len(s)))
        elif name in ("pred_lengths", "label_lengths"):
            if len(s) != 1 or s[0] != n:
                return _whole(shapes, out_shape, f"{name} is not one length per sample", "pred")
            dims[name] = (0,)
        elif name == "sample_weight":
            dims[name] = _align(s, (n,), (0,))
    dims.update(_out_grad_dims(shapes, out_shape, (0,)))
    return Grid((n,), dims, (0,), (0,), 0, (), False)


def _plan_triplet(spec: TripletSpec, shapes, out_shape) -> Grid:
    x = shapes["pred"]
    ax = normalize_axis(spec.batch_axis, len(x))
    if x[ax] == 0:
        return _whole(shapes, out_shape, "an empty batch", "pred")
    reshape = {n: x for n in ("positive", "negative") if shapes[n] != x}
    dims = {n: tuple(ax if i == ax else None for i in range(len(x))) for n in ("pred", "positive", "negative")}
    dims.update(_out_grad_dims(shapes, out_shape, (ax,)))
    return Grid(x, dims, (ax,), (ax,), ax, (), False, reshape)


def _plan_cosine(shapes, out_shape) -> Grid:
    x2 = shapes["input2"]
    if len(x2) != 2 or out_shape != (x2[0], 1) or x2[0] <= 1:
        return _whole(shapes, out_shape, "CosineEmbeddingLoss splits 2-D inputs of several rows only", "input2")
    m = x2[0]
    reshape = {"input1": x2} if shapes["input1"] != x2 else {}
    dims: dict[str, tuple[int | None, ...]] = {"input1": (0, None), "input2": (0, None)}
    label = shapes["label"]
    if math.prod(label) == m and len(label) in (1, 2) and label[0] == m:
        dims["label"] = (0,) + (None,) * (len(label) - 1)
    elif math.prod(label) == 1:
        dims["label"] = (None,) * len(label)
    else:
        return _whole(shapes, out_shape, "the label is not one entry per row", "input2")
    if "sample_weight" in shapes:
        dims["sample_weight"] = _align(shapes["sample_weight"], (m, 1), (0,))
    dims.update(_out_grad_dims(shapes, out_shape, (0, None)))
    return Grid((m, 1), dims, (0, None), (0,), 0, (), False, reshape, "input2")


# ------------------------------------------------------------------------------------- execution
def _execute(loss, call: Call, grid: Grid, named: dict[str, Any], og: Any, out_sd, grad_sds, total: Any = None):
    import dask.array as da
    from dask.array.utils import meta_from_array
    from dask.base import tokenize

    cls = type(loss)
    letters = (chr(c) for c in count(ord("a")))
    axis_letter = {g: next(letters) for g in grid.split}
    keys = (*cls._inputs, _OUT_GRAD)
    values = {**named, _OUT_GRAD: og}
    split_chunks = _split_chunks(grid, values)
    primary = values[grid.primary]
    like = primary._meta if is_dask_array(primary) else next(a._meta for a in values.values() if is_dask_array(a))

    args: list[Any] = []
    for k in keys:
        a = values[k]
        if not _is_array(a):
            args += [a, None]
            continue
        if k in grid.reshape:
            a = reshaped(a, grid.reshape[k])
        dims = grid.dims[k]
        if all(d is None for d in dims) and not is_dask_array(a):
            args += [a, None]  # a small host array, sent whole with every block
            continue
        target = tuple(split_chunks[d] if d is not None else (n,) for d, n in zip(dims, a.shape, strict=True))
        a = a.rechunk(target) if is_dask_array(a) else da.from_array(a, chunks=target)
        args += [a, "".join(axis_letter[d] if d is not None else next(letters) for d in dims)]

    mode = "fb" if call.want_value and call.want_grad else ("grad" if call.want_grad else "value")
    pdims = grid.dims[grid.primary]
    red = tuple((pdims.index(g), grid.size[g]) for g in grid.reduce) if grid.reduce else ()
    if total is not None:  # a 0-d Dask array: SoftmaxCELoss(normalization='valid')'s divisor, to every block
        args += [total, ""]
    block = _Block(loss, keys, mode, grid.primary, red, grid.mean, total is not None)
    t_ind = "".join(axis_letter[g] for g in grid.split)
    token = tokenize(loss, mode, *args)
    tuples = da.blockwise(
        block,
        t_ind,
        *args,
        concatenate=True,
        dtype=object,
        meta=np.empty((0,) * len(t_ind), dtype=object),
        name=f"{cls.__name__}-blocks-{token}",
    )

    value = None
    if call.want_value:
        o_letters = [axis_letter[d] if d is not None else next(letters) for d in grid.out_dims]
        new = {lt: n for lt, n, d in zip(o_letters, out_sd.shape, grid.out_dims, strict=True) if d is None}
        r_letters = [axis_letter[g] for g in grid.reduce]
        pdt = np.dtype(np.float64) if grid.reduce else out_sd.dtype
        parts = da.blockwise(
            _PickValue(len(grid.reduce)),
            "".join(o_letters + r_letters),
            tuples,
            t_ind,
            new_axes=new,
            adjust_chunks=dict.fromkeys(r_letters, 1),
            dtype=pdt,
            meta=meta_from_array(like, len(o_letters) + len(r_letters), pdt),
            name=f"{cls.__name__}-value-{token}",
        )
        if grid.reduce:
            axes = tuple(range(len(o_letters), len(o_letters) + len(r_letters)))
            value = parts.sum(axis=axes, dtype=np.float64).astype(out_sd.dtype)
        else:
            value = parts
    grads = None
    if call.want_grad:
        grads = []
        for i, (name, sd) in enumerate(zip(cls._differentiable, grad_sds, strict=True)):
            shape = grid.reshape.get(name, tuple(sd.shape))
            dims = grid.dims[name]
            g_letters = [axis_letter[d] if d is not None else next(letters) for d in dims]
            new = {lt: n for lt, n, d in zip(g_letters, shape, dims, strict=True) if d is None}
            g = da.blockwise(
                _PickGrad(i),
                "".join(g_letters),
                tuples,
                t_ind,
                new_axes=new,
                dtype=sd.dtype,
                meta=meta_from_array(like, len(shape), sd.dtype),
                name=f"{cls.__name__}-grad-{name}-{token}",
            )
            grads.append(reshaped(g, sd.shape))
        grads = tuple(grads)
    return value, grads


def _split_chunks(grid: Grid, values: dict[str, Any]) -> dict[int, tuple[int, ...]]:
    """Chunks of every split axis: the primary input's, else the first Dask input spanning it."""
    order = [grid.primary] + [n for n in values if n != grid.primary]
    chunks: dict[int, tuple[int, ...]] = {}
    for g in grid.split:
        for n in order:
            a = values[n]
            if not is_dask_array(a) or n not in grid.dims or n in grid.reshape:
                continue
            dims = grid.dims[n]
            if g in dims:
                chunks[g] = tuple(int(c) for c in a.chunks[dims.index(g)])
                break
        else:
            chunks[g] = (grid.size[g],)
    return chunks


class _Block:
    """The function run on every block: calls the loss on the blocks (picklable, no closure)."""

    def __init__(
        self, loss: Any, keys: tuple[str, ...], mode: str, primary: str, red: tuple, mean: bool, total: bool = False
    ) -> None:
        self.loss, self.keys, self.mode, self.primary, self.red, self.mean = loss, keys, mode, primary, red, mean
        self.total = total  # the last block is SoftmaxCELoss(normalization='valid')'s divisor

    def __call__(self, *blocks: Any) -> tuple[Any, tuple[Any, ...] | None]:
        if _serialise_kernels():
            with _KERNEL_LOCK:
                return self._run(blocks)
        return self._run(blocks)

    def _run(self, blocks: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...] | None]:
        loss = self.loss
        if self.total:
            loss = copy.copy(loss)
            loss._valid_total = float(blocks[-1])
            blocks = blocks[:-1]
        kw = dict(zip(self.keys, blocks, strict=True))
        og = kw.pop(_OUT_GRAD)
        kw = {k: v for k, v in kw.items() if v is not None}
        r = 1.0
        if self.red and self.mean:
            num = math.prod(kw[self.primary].shape[d] for d, _ in self.red)
            den = math.prod(n for _, n in self.red)
            r = num / den
        if self.mode == "value":
            return _partial(loss(**kw), self.red, r), None
        if r != 1.0:
            og = r if og is None else (og.astype("float64") * r if hasattr(og, "astype") else float(og) * r)
        if self.mode == "grad":
            return None, tuple(loss.backward(**kw, out_grad=og))
        v, g = loss.forward_backward(**kw, out_grad=og)
        return _partial(v, self.red, r), tuple(g)


def _partial(v: Any, red: tuple, r: float) -> Any:
    """A block's value as a float64 partial sum (``K_j / K`` of its mean) when rows are split.

    A block with no elements of the rows (a zero-length chunk: ``K_j = 0``) adds exactly 0; its own
    mean over nothing is NaN (0/0), which ``* 0`` would keep.
    """
    if not red:
        return v
    partial = v.astype("float64")
    if r == 0.0:
        partial.fill(0.0)
    else:
        partial *= r
    return partial


class _PickValue:
    def __init__(self, n_red: int):
        self.n_red = n_red

    def __call__(self, t: tuple) -> Any:
        v = t[0]
        return v.reshape(tuple(v.shape) + (1,) * self.n_red)


class _PickGrad:
    def __init__(self, i: int):
        self.i = i

    def __call__(self, t: tuple) -> Any:
        return t[1][self.i]


# ------------------------------------------------------------------------------------- MakeLoss
def makeloss_head(value: Any, dtype: np.dtype, normalization: str, grad_scale: float, valid_thresh: float) -> Any:
    """MakeLoss's head gradient ``c`` for a Dask output, as a lazy 0-d Dask array.

    'valid' counts the elements above the threshold with one tree reduction
    (a per-block count, summed); the count enters :func:`head_constant` on
    the driver-free graph, so nothing is computed before the caller asks.
    """
    from ._plan.makeloss import head_constant, threshold

    shape = tuple(int(n) for n in value.shape)
    if normalization != "valid":
        return float(head_constant(shape, dtype, normalization, grad_scale))
    t = threshold(dtype, valid_thresh)
    n_valid = (value.astype(dtype) > t).sum(dtype=np.int64)
    return n_valid.map_blocks(_HeadConstant(shape, dtype, normalization, grad_scale), dtype=dtype)


class _HeadConstant:
    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, normalization: str, grad_scale: float) -> None:
        self.shape, self.dtype, self.normalization, self.grad_scale = shape, dtype, normalization, grad_scale

    def __call__(self, n: Any) -> np.ndarray:
        from ._plan.makeloss import head_constant

        c = head_constant(self.shape, self.dtype, self.normalization, self.grad_scale, int(n))
        return np.asarray(c, dtype=self.dtype)


# ------------------------------------------------------------------------------------- helpers
_KERNEL_LOCK = threading.Lock()


@functools.cache
def _serialise_kernels() -> bool:
    """Whether blocks must call the kernels one at a time in a process.

    Dask's default (threaded) scheduler runs blocks in several threads at
    once; Numba's ``workqueue`` threading layer aborts the process on
    concurrent parallel launches. It is the layer Numba falls back to when
    neither TBB nor OpenMP loads, or when ``NUMBA_THREADING_LAYER=workqueue``.
    """
    from numba.core import config

    if config.THREADING_LAYER == "workqueue":
        return True
    if config.THREADING_LAYER not in ("default", "safe", "threadsafe"):
        return False  # "tbb" / "omp" / "forksafe": a thread-safe layer
    for pool in ("numba.np.ufunc.tbbpool", "numba.np.ufunc.omppool"):
        try:
            importlib.import_module(pool)
            return False
        except Exception:  # noqa: BLE001 - ImportError, or OSError for a missing TBB / OpenMP library
            continue
    return True


def _is_array(a: Any) -> bool:
    return a is not None and not is_scalar(a) and hasattr(a, "shape")


def _host_if_listlike(a: Any) -> Any:
    """Lists and tuples become NumPy arrays (as the in-memory call would read them); arrays stay."""
    if isinstance(a, (list, tuple)):
        return np.asarray(a)
    return a


def _warn_single_block(owner: str, arrays: dict[str, Any], why: str) -> None:
    nbytes = sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in arrays.values())
    if nbytes > SINGLE_BLOCK_WARN_BYTES:
        warnings.warn(
            f"{owner} over Dask arrays runs as one block of {nbytes / 2**20:.0f} MiB ({why}): "
            "one worker holds every input at once",
            SingleBlockWarning,
            stacklevel=4,
        )
