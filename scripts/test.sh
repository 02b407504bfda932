#!/usr/bin/env bash
# Evaluate the models that scripts/train.sh wrote, once per seed. See the usage text (run
# with no arguments) for the tasks, the environment and the output layout.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/common.sh
source "$REPO/scripts/common.sh"

readonly SCRIPT_NAME="test.sh"
readonly SCRIPT_ROLE="Evaluates, for each seed in SEEDS, the model that 'bash scripts/train.sh' trained (an evaluation-only trainer such as ZeroshotCLIP: CLIP itself)."

# Trained trainers need their training run, finished and made with the config asked for now;
# an evaluation-only trainer has nothing to load. The training run's train.py arguments are in TRAIN_PY_ARGS.
# Sets MODEL_ARGS to the train.py flags that pick the model.
select_model() {
    local model_dir="$1" train_command="$2"
    MODEL_ARGS=(--eval-only)
    if is_eval_only; then
        return 0
    fi
    if ! has_result "$model_dir"; then
        echo "error: no finished training run at $model_dir; run '$train_command' first (same TRAINER, CFG, BACKBONE, SHOTS, SEEDS, OUTPUT, TAG, OPTS)" >&2
        exit 1
    fi
    if ! run_matches --model "$model_dir" "${TRAIN_PY_ARGS[@]}"; then
        echo "error: the training run at $model_dir is not the one asked for (above); run '$train_command' with the same TRAINER, CFG, BACKBONE, SHOTS, OPTS, or another OUTPUT or TAG" >&2
        exit 1
    fi
    # No --load-epoch: the engine loads the latest checkpoint, whatever MAX_EPOCH was.
    MODEL_ARGS+=(--model-dir "$model_dir")
}

# base2new: the base-trained model on the new half of the classes.
test_base2new() {
    local dataset="$1" seed seed_folder
    for seed in $SEEDS; do
        seed_folder="$(seed_dir base2new "$dataset" "$seed")"
        training_run_args base2new "$dataset" "$seed"
        select_model "$seed_folder/train_base" "bash scripts/train.sh $dataset base2new"
        base_train_py_args "$dataset" "$seed"
        run_once "$seed_folder/test_new" "${TRAIN_PY_ARGS[@]}" "${MODEL_ARGS[@]}" \
            DATASET.SUBSAMPLE_CLASSES new
    done
}

# cross-dataset / domain-generalization: DATASET = SOURCE means all of TARGETS; any other
# DATASET is the one target.
targets_to_evaluate() {
    local task="$1" dataset="$2"
    if ! is_word_in "$task" "$TRANSFER_TASKS"; then
        echo ""
    elif [[ "$dataset" == "$SOURCE" ]]; then
        echo "${TARGETS:-$(default_targets "$task")}"
    else
        echo "$dataset"
    fi
}

# cross-dataset / domain-generalization: the SOURCE model on each target, all its classes.
test_targets() {
    local task="$1" targets="$2" seed seed_folder target
    for seed in $SEEDS; do
        seed_folder="$(seed_dir "$task" "$SOURCE" "$seed")"
        training_run_args "$task" "$SOURCE" "$seed"
        select_model "$seed_folder/train_source" "bash scripts/train.sh $SOURCE $task"
        for target in $targets; do
            base_train_py_args "$target" "$seed"
            run_once "$seed_folder/test_$target" "${TRAIN_PY_ARGS[@]}" "${MODEL_ARGS[@]}"
        done
    done
}

main() {
    if [[ $# -ne 2 ]]; then
        usage_error "$SCRIPT_NAME" "$SCRIPT_ROLE" "expected 2 arguments (DATASET TASK), got $#"
    fi
    local dataset="$1" task="$2"
    local targets
    load_settings
    SHOTS="${SHOTS:-$(default_shots "$task")}"
    targets="$(targets_to_evaluate "$task" "$dataset")"
    validate_arguments "$SCRIPT_NAME" "$SCRIPT_ROLE" "$dataset" "$task" "$targets"
    parse_opts
    describe_configuration "$SCRIPT_NAME" "$SCRIPT_ROLE"
    if [[ "$task" == base2new ]]; then
        test_base2new "$dataset"
    elif [[ "$task" == few-shot ]]; then
        echo "few-shot: nothing to test; each run of 'bash scripts/train.sh $dataset few-shot' ends with its test on all classes"
    else
        test_targets "$task" "$targets"
    fi
}

main "$@"
