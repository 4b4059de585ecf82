"""Asset jobs: per-domain data, evaluation and analyses, per (method, domain) training and profiling (and the
Table-6 ablation grid), and the SCL grid."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from assets.partitions import domain_partitions, method_domain_partitions, scl_partitions

TRAINING = AssetSelection.assets("profiler_checkpoint", "generated_profiles")
ADAPTATION = AssetSelection.groups("adaptation")
ANALYSES = AssetSelection.groups("analyses")
DOMAIN_ASSETS = AssetSelection.all() - TRAINING - ADAPTATION - AssetSelection.assets("method_configs")

default_graph_job = define_asset_job(
    "default_graph",
    selection=DOMAIN_ASSETS,
    partitions_def=domain_partitions,
    description="Every per-domain asset: data -> embeddings -> Base profiles -> metrics (with the profiles of every "
    "trained method that exists) -> analyses.",
)
domain_data_job = define_asset_job(
    "domain_data",
    selection=DOMAIN_ASSETS - AssetSelection.groups("evaluation") - ANALYSES,
    partitions_def=domain_partitions,
    description="One domain's tables, item embeddings and Base profiles.",
)
evaluation_job = define_asset_job(
    "evaluation", selection=AssetSelection.groups("evaluation"), partitions_def=domain_partitions,
    description="Recommendation and QA metrics of one domain, every method, with significance against BLUE.",
)
analyses_job = define_asset_job(
    "analyses", selection=ANALYSES, partitions_def=domain_partitions,
    description="The paper's comparison views of one domain: the Table-6 ablation table (BLUE and its blue-* "
    "variants), the t-SNE map of user embeddings, and the quality / inference-cost frontier.",
)
ablation_training_job = define_asset_job(
    "ablation_training",
    selection=TRAINING,
    partitions_def=method_domain_partitions,
    description="Table 6: train BLUE and each blue-* variant with the same recipe and budget (the training "
    "resource's config, one for all) on the source domain and write its profiles; from the UI, backfill the "
    "blue and blue-* method partitions of the source domain (then of each evaluated domain), then run "
    "`evaluation` and `analyses` per domain. `python -m jobs.ablation_grid` does all of it.",
)
profiler_training_job = define_asset_job(
    "profiler_training",
    selection=TRAINING,
    partitions_def=method_domain_partitions,
    description="Train a method on a domain (resumable) and write its profiles of that domain; backfill "
    "method x domain partitions from the UI.",
)
training_inputs_job = define_asset_job(
    "training_inputs",
    selection=AssetSelection.assets("profiler_checkpoint").upstream() - TRAINING - AssetSelection.assets("method_configs"),
    partitions_def=domain_partitions,
    description="What training a method on a domain reads (tables, item embeddings, base weights), without the "
    "Base profiles and metrics of the default graph.",
)
checkpoint_training_job = define_asset_job(
    "checkpoint_training", selection=AssetSelection.assets("profiler_checkpoint"),
    partitions_def=method_domain_partitions,
    description="Train (or continue) a method's checkpoint on a domain, without profiling; the recipe sweep's job.",
)
profiling_job = define_asset_job(
    "profiling", selection=AssetSelection.assets("generated_profiles"), partitions_def=method_domain_partitions,
    description="Profiles of a domain's test users with a method's checkpoint trained on the source domain.",
)
scl_adaptation_job = define_asset_job(
    "scl_adaptation",
    selection=AssetSelection.assets("scl_training_pairs", "scl_embedder", "scl_example_scores"),
    partitions_def=scl_partitions,
    description="Adapt the embedder with SCL on a (context method, domain) and score the domain's test users with "
    "it; the source domain's partitions first, since every domain's cross-domain scores use them.",
)
scl_evaluation_job = define_asset_job(
    "scl_evaluation", selection=AssetSelection.assets("scl_metrics"), partitions_def=domain_partitions,
    description="Cross-domain and in-domain SCL metrics of one domain, paired-tested against BLUE+SCL.",
)
