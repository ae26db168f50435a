#!/bin/bash
# Fill the git-ignored folders a device call carries (run here, in the repo root, before the call):
#   .devdata  the real DNA the benchmarks read (DMD gene, chrX 1-70 Mbp, E. coli, 10k reads), from ../shared/data
#   .whl      wheels of the packages the device image lacks (pysam, biopython, typer, rich, h5py, ...; pytest; ninja
#             and einops for the FlashFFTConv anchor)
# Then: device run with carry [".devdata", ".whl"] and the command `BUDGET=<s> bash tools/device_session.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SHARED_DATA:-../shared/data}
mkdir -p .devdata .whl
for f in DMD_GRCh37_chrX.fa.gz GRCh37_chrX_1-70M.fa.gz{,.fai,.gzi} ecoli_K12_MG1655.fa.gz{,.fai,.gzi} \
         human_NA07051_hg18_10k_reads.bam; do
  cp "$data/$f" .devdata/ && chmod u+w ".devdata/$f"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  pysam biopython h5py typer rich click shellingham markdown-it-py mdurl pygments safetensors typing_extensions \
  pydantic pydantic-core annotated-types typing-inspection annotated-doc pytest pluggy iniconfig packaging \
  ninja einops  # FlashFFTConv's build and import (tools/anchors/flashfftconv.sh)
du -sh .devdata .whl  # with the tree, under the device call's 64 MiB
