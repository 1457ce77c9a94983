"""Reporting: tables, figures and verdicts from result files, beside the paper's numbers.

:mod:`.entries` is the data model every report reads (a run as an ``Entry``, runs of one setting
as a ``Block``, the order of defenses and attacks); :mod:`.tables` writes the markdown tables,
:mod:`.plots` the report's figures (on :mod:`.figures`' shared styles), :mod:`.summary_figure`
the main job's bar chart, :mod:`.verdict` the main job's held / fell summary, and
:mod:`.report` puts tables and figures together into ``report.md`` (also the committed evidence
report); :mod:`.paper_numbers` holds the paper's tables.  Layering: reporting imports
:mod:`simulations.config`, :mod:`simulations.engine` (result types) and
:mod:`simulations.sweeps` (reading result files), never the CLI; inside it, ``entries`` comes
first, then ``tables`` and ``figures``, then ``plots`` and ``summary_figure``, and ``report``
last: nothing imports back.  This ``__init__`` imports nothing (no matplotlib for the tables).
"""
