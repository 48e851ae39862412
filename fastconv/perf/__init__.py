"""Benchmarks and performance reports (``fastconv bench``, ``fastconv report``).

* :mod:`.suite`: the layer suite as plain data (shared with ``bench/``);
* :mod:`.machine`: the machine's description and measured ceilings;
* :mod:`.runners`: registered implementations and peer libraries as timed callables;
* :mod:`.timing`, :mod:`.records`: timing and pytest-benchmark JSON records;
* :mod:`.edge`: the dense-matrix-versus-convolution sweep (edge detection);
* :mod:`.report`: report.md and PNG plots from saved runs;
* :mod:`.run`, :mod:`.cli`: the ``bench`` and ``report`` commands.

Importing this package needs only NumPy; matplotlib, tqdm and the peers
are imported when used.  It imports :mod:`fastconv.dense` so the "dense"
algorithm is registered.
"""
from .. import dense as _dense  # noqa: F401  (registers conv2d numpy/dense)
