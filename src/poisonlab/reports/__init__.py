"""Tables, figures and HTML pages made from experiment results and scans.

Nothing here is imported by ``import poisonlab``; matplotlib is imported only inside the plotting
functions (Agg backend), so building a table never pulls in a plotting stack.

- :mod:`poisonlab.reports.paper_tables`: the reproduced papers' published tables as data, with the
  mapping of their rows and columns onto our parameter paths and metric names;
- :mod:`poisonlab.reports.records`: reading store records and parameter paths;
- :mod:`poisonlab.reports.tables`: the table type, mean ± spread over repeats, generic layouts;
- :mod:`poisonlab.reports.compare`: paper-style tables, ours beside the published numbers;
- :mod:`poisonlab.reports.writers`: Markdown, CSV and rich renderings of a table;
- :mod:`poisonlab.reports.plots`: matplotlib figures as PNG bytes;
- :mod:`poisonlab.reports.html`: the self-contained report page and ``write_report``;
- :mod:`poisonlab.reports.run_report`, :mod:`poisonlab.reports.scan_report`: its sections for
  experiment / cell folders and for scan folders.
"""

from __future__ import annotations
