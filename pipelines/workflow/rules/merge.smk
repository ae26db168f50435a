# Merge the N shards into one file, then report per-shard throughput.
#
# `genoconv merge` checks that every shard is complete and that all come from the same model and options,
# and writes shard 1's records, then shard 2's, and so on. A copy merge is resumable like embed (it replays
# rows through the same crash-safe writer), so it uses the same partial-file pattern (see rules/embed.smk).
# The partial file sits in the output's own folder: a --virtual merge maps the shard files by path, and a
# rename within one folder keeps those paths valid.


rule merge:
    input:
        [shard_path(i) for i in range(1, N + 1)],
    output:
        f"{OUT}/all.h5",
    log:
        f"{OUT}/logs/merge.log",
    params:
        partial=f"{OUT}/all.partial.h5",
        # Functions, not plain values: Snakemake reruns finished jobs when a plain param changes, and the
        # walltime or where Python and genoconv are installed change how a job runs, not what it writes.
        stop=stop_options,
        resumable=lambda wildcards: shlex.join(RESUMABLE),
        genoconv=lambda wildcards: shlex.join(GENOCONV),
        virtual="--virtual" if MERGE_VIRTUAL else "",
    threads: 1
    shell:
        "{params.resumable} {params.stop} {params.partial:q} {output:q} -- "
        "{params.genoconv} merge {input:q} -o {params.partial:q} {params.virtual} > {log:q} 2>&1"


rule report:
    input:
        shards=[shard_path(i) for i in range(1, N + 1)],
        merged=f"{OUT}/all.h5",
    output:
        f"{OUT}/report.tsv",
    log:
        f"{OUT}/logs/report.log",
    script:
        "../scripts/report.py"
