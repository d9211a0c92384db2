"""The paper's experiments on any configured dataset: Tables 1-4, §3.6, §3.7, Figures 1/3/4, and the
"beat it" study of map → box variants (``snakemake paper``, workflow/rules/paper.smk).

Modules:

- :mod:`~sensitivity.paper.bank`: all four map variants of a dataset's images in memory, aligned by row;
- :mod:`~sensitivity.paper.variants`: the variants tried, box models of the workflow's family (`BoxRegressor`);
- :mod:`~sensitivity.paper.experiments`: fit on train, choose on val, report on test, for every method and seed;
- :mod:`~sensitivity.paper.tables`: the published numbers and the table builders (CSV + Markdown);
- :mod:`~sensitivity.paper.speed`: images/s of forward, forward + backward, and image → box;
- :mod:`~sensitivity.paper.figures`: the paper-style figures;
- :mod:`~sensitivity.paper.report`: RESULTS.md from the result files.
"""
