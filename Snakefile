# infbench: how fast and how accurate is each inference runtime at each precision and
# batch size, on this machine? (docs/architecture.md). This file is the table of contents.

from snakemake.utils import min_version

min_version("9.0")


# the embedded default, unless --configfile names another (which replaces it, not merges)
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# the front page of `snakemake --report` (make report)
report: "workflow/report/workflow.rst"


wildcard_constraints:
    model="[A-Za-z0-9_]+",
    runtime="|".join(RUNTIMES),
    precision="fp32|fp16|int8",
    bs="[0-9]+",


# The aggregation (tables, plots, the scores they are built from) and checkpoint downloads
# (compute nodes may have no network) run where Snakemake runs, never as cluster jobs: each
# of those rules says so (localrule: True), which holds under the names a module gives them
# (`use rule * from infbench as infbench_*`), where a localrules list would not.


include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/precision.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        TABLES,
        PLOTS,
    localrule: True


onstart:
    hold_run_lock()


onerror:
    tables_from_what_ran()
