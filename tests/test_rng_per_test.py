"""The suite's per-test generator (``conftest._rng_per_test``): a test's draws do not depend on earlier tests."""

import zlib

import numpy as np

RNG = np.random.default_rng(1234)


def _fresh(nodeid: str) -> np.random.Generator:
    return np.random.default_rng([1234, zlib.crc32(nodeid.encode())])


def test_draws_of_an_earlier_test():
    RNG.standard_normal(5)  # would advance a shared generator for the test below


def test_a_test_starts_from_its_own_generator(request):
    np.testing.assert_array_equal(RNG.standard_normal(4), _fresh(request.node.nodeid).standard_normal(4))


def test_two_tests_draw_differently(request):
    other = request.node.nodeid.replace("test_two_tests_draw_differently", "test_a_test_starts_from_its_own_generator")
    assert not np.array_equal(RNG.standard_normal(4), _fresh(other).standard_normal(4))
