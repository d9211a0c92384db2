# sensitivity-loc: boxes from sensitivity maps of pretrained classifiers.
# Contents page of the workflow; each stage lives in workflow/rules/<stage>.smk.
from snakemake.utils import min_version

min_version("8.20")


configfile: "config.yaml"


# The report's landing page (`snakemake --report report.html`): what ran, on what, and the CorLoc tables.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/methods.smk"
include: "workflow/rules/speed.smk"


rule all:
    input:
        expand("results/{dataset}_corloc.md", dataset=config["targets"]),
        expand("results/{dataset}/examples.png", dataset=config["targets"]),
        # A deliverable too (`sensitivity localize --regressor`). Requested here, a model that is missing
        # (e.g. a forced refit was killed) is fitted again even though older tables are still present.
        expand("results/{dataset}/regressor.npz", dataset=config["targets"]),
    default_target: True
