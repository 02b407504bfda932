#!/usr/bin/env bash
# Run every dataset and seed of one protocol's paper table through scripts/train.sh and
# scripts/test.sh, then tabulate the task's output tree with tools/results.py beside the
# published numbers. A thin loop: every setting is train.sh's (run it with no arguments).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly EXIT_USAGE=2
readonly TASKS="base2new cross-dataset domain-generalization few-shot"
# The 11 datasets of the base-to-new and few-shot tables (configs/datasets/<name>.yaml).
readonly BENCHMARKS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"

usage() {
    cat <<EOF
Usage: bash scripts/reproduce.sh TRAINER TASK

Runs TASK (one of: $TASKS) for TRAINER on every dataset and seed with
scripts/train.sh and scripts/test.sh, then python tools/results.py \$OUTPUT/TASK
--reference tools/reference_results.json. A rerun skips every finished run, so it
also resumes an interrupted reproduction.

Environment, besides everything train.sh and test.sh read (DATA, BACKBONE, SEEDS, SHOTS,
OPTS, OUTPUT, TAG, NPROC, SOURCE, TARGETS, PYTHON; run either with no arguments):
  DATASETS  base2new and few-shot: the datasets to loop over [the 11 benchmarks:
            $BENCHMARKS]
  CFG       the trainer config [the task's own config when TRAINER has one:
            vit_b16_cross_datasets for cross-dataset and domain-generalization,
            vit_b16_few_shot for few-shot; otherwise vit_b16]
Runs land in \$OUTPUT/TASK/TRAINER/CONFIG/... as train.sh says; two calls with other CFG or
DATASETS and the same TAG share one CONFIG folder, so one table row covers both.
EOF
}

usage_error() {
    {
        echo "error: $1"
        echo
        usage
    } >&2
    exit "$EXIT_USAGE"
}

# The config a paper used for TASK, by file name: a method that ships one config per protocol
# names it after the protocol, so no trainer name is looked at here.
default_cfg() {
    local trainer="$1" task="$2" suffix=""
    case "$task" in
        cross-dataset | domain-generalization) suffix="_cross_datasets" ;;
        few-shot) suffix="_few_shot" ;;
    esac
    if [[ -n "$suffix" && -f "$REPO/configs/trainers/$trainer/vit_b16$suffix.yaml" ]]; then
        echo "vit_b16$suffix"
    else
        echo "vit_b16"
    fi
}

main() {
    if [[ $# -ne 2 ]]; then
        usage_error "expected 2 arguments (TRAINER TASK), got $#"
    fi
    local trainer="$1" task="$2" dataset source_dataset
    case " $TASKS " in
        *" $task "*) ;;
        *) usage_error "unknown TASK '$task'; valid tasks: $TASKS" ;;
    esac
    export TRAINER="$trainer"
    export CFG="${CFG:-$(default_cfg "$trainer" "$task")}"
    source_dataset="${SOURCE:-imagenet}"  # train.sh's default
    echo "reproduce: $TRAINER / $CFG, $task"

    case "$task" in
        base2new)
            for dataset in ${DATASETS:-$BENCHMARKS}; do
                bash "$REPO/scripts/train.sh" "$dataset" base2new
                bash "$REPO/scripts/test.sh" "$dataset" base2new
            done
            ;;
        cross-dataset | domain-generalization)
            bash "$REPO/scripts/train.sh" "$source_dataset" "$task"
            bash "$REPO/scripts/test.sh" "$source_dataset" "$task"
            ;;
        few-shot)
            for dataset in ${DATASETS:-$BENCHMARKS}; do
                bash "$REPO/scripts/train.sh" "$dataset" few-shot
            done
            ;;
    esac

    local python="${PYTHON:-}"
    if [[ -z "$python" ]]; then
        if [[ -x "$REPO/.venv/bin/python" ]]; then python="$REPO/.venv/bin/python"; else python=python3; fi
    fi
    "$python" "$REPO/tools/results.py" "${OUTPUT:-output}/$task" --reference "$REPO/tools/reference_results.json"
}

main "$@"
