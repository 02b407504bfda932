#!/usr/bin/env bash
# Train one dataset under one protocol, once per seed. See the usage text (run with no
# arguments) for the tasks, the environment and the output layout.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/common.sh
source "$REPO/scripts/common.sh"

readonly SCRIPT_NAME="train.sh"
readonly SCRIPT_ROLE="Trains TRAINER on DATASET for each seed in SEEDS (an evaluation-only trainer such as ZeroshotCLIP: evaluates it, as it learns nothing)."
# The run's train.py arguments without --output-dir, one per line: two runs with equal
# records trained the same model.
readonly ARGS_RECORD="train_args.txt"

# base2new: few-shot training on the base classes; the final test is the base accuracy.
train_base2new() {
    local dataset="$1" seed
    for seed in $SEEDS; do
        training_run_args base2new "$dataset" "$seed"
        run_once "$(seed_dir base2new "$dataset" "$seed")/train_base" "${TRAIN_PY_ARGS[@]}"
    done
}

# few-shot: training on all classes at each number of SHOTS; the final test, on all classes, is
# the result. An evaluation-only trainer sees no training image, so it is evaluated once, as 0 shots.
train_few_shot() {
    local dataset="$1" shots_list="$SHOTS" shots seed
    if is_eval_only; then
        shots_list=0
    fi
    for shots in $shots_list; do
        for seed in $SEEDS; do
            training_run_args few-shot "$dataset" "$seed" "$shots"
            run_once "$(seed_dir few-shot "$dataset" "$seed" "$shots")/train_all" "${TRAIN_PY_ARGS[@]}"
        done
    done
}

other_transfer_task() {
    case "$1" in
        cross-dataset) echo domain-generalization ;;
        domain-generalization) echo cross-dataset ;;
    esac
}

# Link run_dir to the sibling task's source run when that run finished with the same
# train.py arguments; a relative link keeps the output tree movable.
reuse_sibling_source_run() {
    local task="$1" seed="$2" run_dir="$3" wanted_record="$4"
    local sibling sibling_run
    sibling="$(other_transfer_task "$task")"
    sibling_run="$(seed_dir "$sibling" "$SOURCE" "$seed")/train_source"
    if [[ -e "$run_dir" || -L "$run_dir" || -L "$sibling_run" ]]; then
        return 1
    fi
    has_result "$sibling_run" || return 1
    [[ -f "$sibling_run/$ARGS_RECORD" ]] || return 1
    [[ "$(cat "$sibling_run/$ARGS_RECORD")" == "$wanted_record" ]] || return 1
    mkdir -p "$(dirname "$run_dir")"
    # From seed<S>/ up six levels reaches $OUTPUT.
    ln -s "../../../../../../$sibling/$TRAINER/$CONFIG_NAME/$SOURCE/shots_$(folder_shots)/seed$seed/train_source" "$run_dir"
    echo "reuse: $run_dir -> $sibling_run (same train.py arguments)"
}

# cross-dataset / domain-generalization: train on SOURCE with all classes.
train_source() {
    local task="$1" dataset="$2" seed run_dir record
    if [[ "$dataset" != "$SOURCE" ]]; then
        usage_error "$SCRIPT_NAME" "$SCRIPT_ROLE" \
            "$task trains on the source only: DATASET is '$dataset' but SOURCE is '$SOURCE'; run 'bash scripts/train.sh $SOURCE $task', or set SOURCE=$dataset"
    fi
    for seed in $SEEDS; do
        run_dir="$(seed_dir "$task" "$dataset" "$seed")/train_source"
        training_run_args "$task" "$dataset" "$seed"
        record="$(printf '%s\n' "${TRAIN_PY_ARGS[@]}" "${OPTS_ARRAY[@]}")"
        if reuse_sibling_source_run "$task" "$seed" "$run_dir" "$record"; then
            continue
        fi
        # Recorded before the run, so a finished run always carries the arguments it used.
        if ! has_result "$run_dir"; then
            mkdir -p "$run_dir"
            printf '%s\n' "$record" >"$run_dir/$ARGS_RECORD"
        fi
        run_once "$run_dir" "${TRAIN_PY_ARGS[@]}"
    done
}

main() {
    if [[ $# -ne 2 ]]; then
        usage_error "$SCRIPT_NAME" "$SCRIPT_ROLE" "expected 2 arguments (DATASET TASK), got $#"
    fi
    local dataset="$1" task="$2"
    load_settings
    SHOTS="${SHOTS:-$(default_shots "$task")}"
    # Training needs no target, so TARGETS is checked by test.sh only.
    validate_arguments "$SCRIPT_NAME" "$SCRIPT_ROLE" "$dataset" "$task" ""
    parse_opts
    describe_configuration "$SCRIPT_NAME" "$SCRIPT_ROLE"
    if [[ "$task" == base2new ]]; then
        train_base2new "$dataset"
    elif is_word_in "$task" "$TRANSFER_TASKS"; then
        train_source "$task" "$dataset"
    elif [[ "$task" == few-shot ]]; then
        train_few_shot "$dataset"
    fi
}

main "$@"
