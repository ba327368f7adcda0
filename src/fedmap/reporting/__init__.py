"""``fedmap report``: runs (directories or committed grid tables) -> tables and figures.

Modules, in the order data flows through them: :mod:`~fedmap.reporting.record`
(the one in-memory run, :class:`RunData`, and a group of seeds),
:mod:`~fedmap.reporting.run_dirs` and :mod:`~fedmap.reporting.grid_read` (fill it
from run directories or from a grid's committed tables; :mod:`~fedmap.reporting.grid_write`
writes those tables), :mod:`~fedmap.reporting.grouping`, :mod:`~fedmap.reporting.rows`
(table cells), :mod:`~fedmap.reporting.figures` (the only importer of matplotlib) and
:mod:`~fedmap.reporting.report` (the pages).
"""
