# One `genoconv embed --shard i/N` job per shard: the GPU part of the workflow.
#
# On one machine with several GPUs (`gpu_slots`, set to `auto` by the local profile) shard i runs on
# cuda:((i-1) mod n) and holds that GPU's slot resource, so n shards run at once, one per GPU, never two on one.
#
# Walltime and preemption: the job asks genoconv to stop `walltime_margin_s` before its `runtime` runs out
# (resumable.sh --stop-after; SIGUSR1), genoconv commits what is done and exits 3, the job fails, and
# Snakemake's retry (`retries` in the profile) reruns the same command, which resumes the partial file.
# A SIGTERM from SLURM (preemption, scancel, the walltime itself) ends the same way, and even a SIGKILL
# loses only the record in progress (the store is crash-safe), so every retry makes progress.
#
# Why a timer in the job rather than `sbatch --signal`: the SLURM plugin's batch script is `/bin/sh` running
# Snakemake, which runs the rule inside `srun`. `--signal=B:USR1@T` goes to that shell only, which has no
# trap, so the shell dies and SLURM ends the job T seconds early; `--signal=USR1@T` goes to every process of
# the srun step, and the Snakemake process there has no USR1 handler either and dies, taking the step down
# while genoconv is still saving. The timer signals genoconv alone, on any executor.
#
# Outputs: the declared output is only ever a finished shard. The shard is written at
# <outdir>/partial/shard_i_of_N.h5, which Snakemake does not know about, and renamed when genoconv exits 0.
# A declared output would be deleted by Snakemake before every attempt and after every failure, and with
# it the work a retry should resume. (Snakemake's `--keep-incomplete` only covers the failure, not the
# deletion before a rerun, and applies to every rule; `protected()` makes the job fail instead of writing.)
# The partial file is also safe from `--rerun-incomplete` and from a changed config: a partial file made
# with different options is refused by genoconv (exit 2, "started with different options") rather than
# mixed in; delete <outdir>/partial to start those shards over.


rule embed:
    input:
        INPUTS,
    output:
        f"{OUT}/shards/shard_{{i}}_of_{N}.h5",
    log:
        f"{OUT}/logs/embed_shard_{{i}}_of_{N}.log",
    wildcard_constraints:
        i=r"[1-9][0-9]*",
    resources:
        **slot_resources(),
    params:
        partial=lambda wildcards: partial_path(f"shard_{wildcards.i}_of_{N}.h5"),
        shard=lambda wildcards: f"{wildcards.i}/{N}",
        device=shard_device,
        # Functions, not plain values: Snakemake reruns finished jobs when a plain param changes, and the
        # walltime or where Python and genoconv are installed change how a job runs, not what it writes.
        stop=stop_options,
        resumable=lambda wildcards: shlex.join(RESUMABLE),
        genoconv=lambda wildcards: shlex.join(GENOCONV),
        options=shlex.join(embed_options()),
    threads: _setting("threads", int, lambda t: t >= 1, "must be at least 1")
    shell:
        "{params.resumable} {params.stop} {params.partial:q} {output:q} -- "
        "{params.genoconv} embed {input:q} -o {params.partial:q} --shard {params.shard} --device {params.device} "
        "{params.options} "
        "> {log:q} 2>&1"
