#!/usr/bin/env bash
# Milestone-39 device run (issue 4: whether gx8's one kernel can be the
# default): scripts/device-default-trial.sh with SETTINGS "gx8=35 gx8=99"
# and CudaTuning::gemv_x8 set to GX8 (35) for the second round of checks
# (then the old default was 0; that round's log is $OUT/checks-trial.log).
cd "$(dirname "$0")/.."
SETTINGS=${SETTINGS:-gx8=35 gx8=99} FIELD=gemv_x8 VALUE=${GX8:-35} exec bash scripts/device-default-trial.sh
