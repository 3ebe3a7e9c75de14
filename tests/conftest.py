"""Settings every test folder shares (both pytest runs of ``make test`` read this file).

Hypothesis runs without a deadline per example: the tests check behaviour, and time is the
benchmarks' job (``bench/``). On a loaded two-core machine one slow example (a garbage
collection, a cold cache) can pass the default 200 ms and fail a property that holds.
"""

from hypothesis import settings

settings.register_profile("zerogate", deadline=None)
settings.load_profile("zerogate")
