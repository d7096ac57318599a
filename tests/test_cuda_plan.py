"""The CUDA work decomposition fills the GPU for every shape (pure arithmetic, no GPU needed)."""

from __future__ import annotations

import pytest

from numba_losses.kernels._options import CUDA_BLOCKS_PER_SM, CUDA_GRID_PER_SM

elementwise = pytest.importorskip("numba_losses.kernels.cuda.elementwise")

H100_SMS = 132
THREADS = 256


@pytest.mark.parametrize(
    "n_rows, k",
    [(1, 1 << 26), (4, 1 << 24), (64, 1 << 20), (1 << 22, 1), (1 << 20, 10), (4096, 512), (8192, 8192), (1 << 16, 64)],
)
def test_large_shapes_use_the_whole_gpu(n_rows, k):
    group, nck, chunk, blocks = elementwise.launch_plan(n_rows, k, H100_SMS, THREADS)
    per_block = THREADS // group
    assert group & (group - 1) == 0 and 1 <= group <= THREADS
    assert nck * chunk >= k > (nck - 1) * chunk  # the chunks cover each row exactly
    assert chunk % group == 0  # every thread of a group starts aligned with its neighbours
    # enough blocks for every multiprocessor to hold several, capped for the grid-stride loop
    assert min(H100_SMS * (CUDA_BLOCKS_PER_SM - 1), -(-n_rows * nck // per_block)) <= blocks
    assert blocks <= H100_SMS * CUDA_GRID_PER_SM
    # no thread idles for want of elements when rows are long
    if k >= THREADS * 8:
        assert group == THREADS


def test_one_element_rows_take_one_thread_each():
    group, nck, chunk, blocks = elementwise.launch_plan(1 << 22, 1, H100_SMS, THREADS)
    assert (group, nck, chunk) == (1, 1, 1)
    assert blocks == H100_SMS * CUDA_GRID_PER_SM


def test_batch_of_one_is_cut_into_chunks():
    group, nck, chunk, blocks = elementwise.launch_plan(1, 1 << 26, H100_SMS, THREADS)
    # rounding chunks to whole groups may lose a few tasks, never a whole wave
    assert blocks == nck >= H100_SMS * (CUDA_BLOCKS_PER_SM - 1)


def test_tiny_inputs_launch_one_block():
    assert elementwise.launch_plan(64, 10, H100_SMS, THREADS)[3] == 1
    assert elementwise.launch_plan(0, 0, H100_SMS, THREADS)[3] == 1
