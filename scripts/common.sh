# Shared pieces of scripts/train.sh and scripts/test.sh. Source it; do not run it.
#
# The caller sets REPO (the repository root) before sourcing. Everything here is a
# function or a default read from the environment, so both scripts agree on the
# output layout, the skip rule and the way train.py is called.

readonly TASKS="base2new cross-dataset domain-generalization few-shot"
readonly FEW_SHOT_SHOTS="1 2 4 8 16"  # CoOp's main table
readonly DEFAULT_SHOTS=16
readonly TRANSFER_TASKS="cross-dataset domain-generalization"  # train on SOURCE, test on TARGETS
readonly CROSS_DATASET_TARGETS="caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
readonly DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r"
readonly EXIT_USAGE=2

# Settings from the environment, with the defaults documented in the usage text.
load_settings() {
    DATA="${DATA:-$REPO/data}"
    TRAINER="${TRAINER:-GOPro}"
    CFG="${CFG:-vit_b16}"
    BACKBONE="${BACKBONE:-}"  # empty: the trainer config's MODEL.BACKBONE.NAME
    TAG="${TAG:-}"  # empty: the folder is named after CFG and the settings given on top of it
    NPROC="${NPROC:-1}"
    SEEDS="${SEEDS:-1 2 3}"
    SHOTS="${SHOTS:-}"  # its default depends on the task: see default_shots
    OUTPUT="${OUTPUT:-output}"
    OPTS="${OPTS:-}"
    SOURCE="${SOURCE:-imagenet}"
    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -x "$REPO/.venv/bin/python" ]]; then
            PYTHON="$REPO/.venv/bin/python"
        else
            PYTHON="python3"
        fi
    fi
}

# The default targets depend on the task, so they are resolved after the task is known.
default_targets() {
    local task="$1"
    case "$task" in
        cross-dataset) echo "$CROSS_DATASET_TARGETS" ;;
        domain-generalization) echo "$DG_TARGETS" ;;
        *) echo "" ;;
    esac
}

default_shots() {
    if [[ "$1" == few-shot ]]; then
        echo "$FEW_SHOT_SHOTS"
    else
        echo "$DEFAULT_SHOTS"
    fi
}

# Dataset names are the basenames of configs/datasets/*.yaml, so a new dataset
# needs no edit here.
available_datasets() {
    local file names=()
    for file in "$REPO"/configs/datasets/*.yaml; do
        [[ -e "$file" ]] || continue
        names+=("$(basename "$file" .yaml)")
    done
    echo "${names[*]:-}"
}

available_trainer_configs() {
    local file names=()
    for file in "$REPO"/configs/trainers/*/*.yaml; do
        [[ -e "$file" && "$file" != */_base_/* ]] || continue  # _base_: blocks other configs inherit
        names+=("$(basename "$(dirname "$file")")/$(basename "$file" .yaml)")
    done
    echo "${names[*]:-}"
}

print_usage() {
    local script="$1" role="$2"
    cat <<EOF
Usage: bash scripts/$script DATASET TASK

$role

TASK is one of: $TASKS
  base2new               train on the base half of DATASET's classes (train.sh; its final
                         test is the base accuracy), evaluate on the new half (test.sh)
  cross-dataset          train on SOURCE with all classes (train.sh DATASET with DATASET =
                         SOURCE); evaluate that model on each of TARGETS (test.sh SOURCE), or
                         on one dataset only (test.sh DATASET)
  domain-generalization  as cross-dataset, with the ImageNet variants as TARGETS; reuses the
                         cross-dataset source model when it was trained with the same arguments
  few-shot               train on all of DATASET's classes with each number of SHOTS (train.sh;
                         its final test, on all classes, is the result; test.sh has nothing to do)
An evaluation-only trainer (its class sets EVAL_ONLY, as ZeroshotCLIP does) learns nothing: it is evaluated
once per seed, under shots_0, whatever SHOTS is.

DATASET is one of (configs/datasets/*.yaml):
  $(available_datasets)

Environment (defaults in brackets):
  DATA      data root [\$REPO/data]
  TRAINER   trainer name [GOPro]
  CFG       trainer config, configs/trainers/TRAINER/CFG.yaml [vit_b16]
            (available TRAINER/CFG: $(available_trainer_configs))
  BACKBONE  CLIP to start from, instead of the config's MODEL.BACKBONE.NAME: an OpenAI name
            (ViT-B/16, RN50), an open_clip tag (ViT-B-16:laion2b_s34b_b88k) or a checkpoint path [the config's]
  SEEDS     seeds [1 2 3]
  SHOTS     shots per class [16]; few-shot: a list [$FEW_SHOT_SHOTS]
  OPTS      extra KEY VALUE overrides for train.py, e.g. OPTS="OPTIM.MAX_EPOCH 1";
            quote a value holding spaces: OPTS="TRAINER.COOP.CTX_INIT 'a photo of a'"
  OUTPUT    output root, relative to the current folder [output]
  TAG       name of the configuration's folder, instead of the automatic one (see Output) [none]
  NPROC     processes per run: N > 1 launches torchrun (tools/torchrun.py --standalone
            --nproc_per_node N: torchrun, reporting a failure in one line) instead of python [1]
  PYTHON    interpreter [\$REPO/.venv/bin/python if present, else python3]
  SOURCE    source dataset of cross-dataset / domain-generalization [imagenet]
  TARGETS   target datasets [cross-dataset: the 10 other benchmarks;
            domain-generalization: $DG_TARGETS]

Output: \$OUTPUT/TASK/TRAINER/CONFIG/DATASET/shots_SHOTS/seedS/{train_base,test_new,train_source,test_<target>,train_all}
CONFIG is TAG when given, else CFG followed by +<key><value> for each setting of BACKBONE and OPTS that
CFG's file does not already set to that value, the key shortened to its last word, sorted: CFG=vit_b16
OPTS="OPTIM.LR 0.01 TRAINER.COOP.N_CTX 8" writes to vit_b16+lr0.01+nctx8, so the points of a sweep
share one OUTPUT and tools/results.py shows them side by side.
A run folder whose log.txt holds a result is skipped when its config.yaml equals the config asked
for (tools/run_config.py; a run recorded for the same arguments and code is recognised without
rebuilding the config); a different one is refused, naming the keys. An interrupted run is run again
and resumes.
EOF
}

# One line naming the bad value, then the usage text; exit code 2 as for any usage error.
usage_error() {
    local script="$1" role="$2" message="$3"
    {
        echo "error: $message"
        echo
        print_usage "$script" "$role"
    } >&2
    exit "$EXIT_USAGE"
}

is_word_in() {
    local word="$1" list="$2" item
    for item in $list; do
        [[ "$item" == "$word" ]] && return 0
    done
    return 1
}

# Check DATASET, TASK, TRAINER/CFG, SEEDS, SHOTS and every target before any run starts,
# so a typo never costs a training run.
validate_arguments() {
    local script="$1" role="$2" dataset="$3" task="$4" targets="$5"
    local datasets name
    datasets="$(available_datasets)"
    if ! is_word_in "$task" "$TASKS"; then
        usage_error "$script" "$role" "unknown TASK '$task'; valid tasks: $TASKS"
    fi
    if ! is_word_in "$dataset" "$datasets"; then
        usage_error "$script" "$role" "unknown DATASET '$dataset' (no configs/datasets/$dataset.yaml); valid datasets: $datasets"
    fi
    for name in $targets; do
        if ! is_word_in "$name" "$datasets"; then
            usage_error "$script" "$role" "unknown dataset '$name' in TARGETS; valid datasets: $datasets"
        fi
    done
    if is_word_in "$task" "$TRANSFER_TASKS" && ! is_word_in "$SOURCE" "$datasets"; then
        usage_error "$script" "$role" "unknown SOURCE '$SOURCE'; valid datasets: $datasets"
    fi
    if [[ ! -f "$(trainer_config_file)" ]]; then
        usage_error "$script" "$role" "no trainer config configs/trainers/$TRAINER/$CFG.yaml for TRAINER='$TRAINER' CFG='$CFG'; available TRAINER/CFG: $(available_trainer_configs)"
    fi
    if [[ -z "${SEEDS// /}" ]]; then
        usage_error "$script" "$role" "SEEDS is empty; give one or more integers, e.g. SEEDS=\"1 2 3\""
    fi
    for name in $SEEDS; do
        [[ "$name" =~ ^[0-9]+$ ]] || usage_error "$script" "$role" "SEEDS holds '$name'; seeds are non-negative integers"
    done
    if [[ "$task" == few-shot ]]; then
        [[ -n "${SHOTS// /}" ]] || usage_error "$script" "$role" "SHOTS is empty; give one or more positive integers, e.g. SHOTS=\"$FEW_SHOT_SHOTS\""
        for name in $SHOTS; do
            [[ "$name" =~ ^[1-9][0-9]*$ ]] || usage_error "$script" "$role" "SHOTS holds '$name'; give positive integers, e.g. SHOTS=\"$FEW_SHOT_SHOTS\""
        done
    elif ! [[ "$SHOTS" =~ ^[1-9][0-9]*$ ]]; then
        usage_error "$script" "$role" "SHOTS is '$SHOTS'; give a positive integer (a list is for the few-shot task)"
    fi
    if ! printf '%s' "$OPTS" | xargs printf '%s\0' >/dev/null 2>&1; then
        usage_error "$script" "$role" "OPTS has an unmatched quote: $OPTS"
    fi
    [[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || usage_error "$script" "$role" "NPROC is '$NPROC'; give a positive integer"
}

trainer_config_file() {
    echo "$REPO/configs/trainers/$TRAINER/$CFG.yaml"
}

dataset_config_file() {
    echo "$REPO/configs/datasets/$1.yaml"
}

# The facts of this call that Python knows, asked once (tools/run_config.py describe, which imports the
# trainers only when its cache is stale): CONFIG_NAME, the configuration's folder; EVAL_ONLY, 1 when the
# trainer class learns nothing; SOURCE_KEY, the fingerprint of the code, config files and backbone file
# that the skip rule's shortcut compares. Call after parse_opts.
describe_configuration() {
    local script="$1" role="$2" facts line code=0
    facts="$("$PYTHON" "$REPO/tools/run_config.py" describe --trainer "$TRAINER" --config-file "$(trainer_config_file)" \
        --cfg "$CFG" --backbone "$BACKBONE" --tag "$TAG" "${OPTS_ARRAY[@]}")" || code=$?
    if (( code != 0 )); then  # its "error: ..." line is on stderr already
        { echo; print_usage "$script" "$role"; } >&2
        exit "$EXIT_USAGE"
    fi
    CONFIG_NAME="" EVAL_ONLY="" SOURCE_KEY=""
    while IFS= read -r line; do
        case "$line" in
            CONFIG_NAME=*) CONFIG_NAME="${line#CONFIG_NAME=}" ;;
            EVAL_ONLY=*) EVAL_ONLY="${line#EVAL_ONLY=}" ;;
            SOURCE_KEY=*) SOURCE_KEY="${line#SOURCE_KEY=}" ;;
        esac
    done <<<"$facts"
    if [[ -z "$CONFIG_NAME" || -z "$EVAL_ONLY" || -z "$SOURCE_KEY" ]]; then
        echo "error: tools/run_config.py describe printed no CONFIG_NAME, EVAL_ONLY and SOURCE_KEY: $facts" >&2
        exit 1
    fi
}

is_eval_only() {
    [[ "$EVAL_ONLY" == 1 ]]
}

# The shots folder of a run: an evaluation-only trainer sees no training image, so its runs are under
# shots_0 whatever SHOTS is (and shared by every SHOTS).
folder_shots() {
    if is_eval_only; then
        echo 0
    else
        echo "${1:-$SHOTS}"
    fi
}

# $OUTPUT/<TASK>/<TRAINER>/<CONFIG_NAME>/<DATASET>/shots_<K>/seed<S>: one folder per seed, the
# runs of that seed (train_base, test_new, train_source, test_<target>, train_all) inside it.
# K is SHOTS unless given (few-shot loops over several); 0 for an evaluation-only trainer.
seed_dir() {
    local task="$1" dataset="$2" seed="$3" shots
    shots="$(folder_shots "${4:-}")"
    echo "$OUTPUT/$task/$TRAINER/$CONFIG_NAME/$dataset/shots_$shots/seed$seed"
}

# The skip rule of upstream's parser: a result is a "* accuracy:" line after "=> result" -- of a
# test-split evaluation, since best_val training logs also hold per-epoch *val* results.
has_result() {
    local run_dir="$1"
    [[ -f "$run_dir/log.txt" ]] || return 1
    awk '/Evaluate on the \*/ { seen = 0; val = ($0 !~ /Evaluate on the \*test\* set/) }
         /=> result/ { seen = 1 }
         seen && !val && /\* accuracy: / { found = 1 }
         END { exit !found }' "$run_dir/log.txt"
}

# An interrupted run left a log.txt without a result. The engine would write the rerun's
# log beside it under a timestamped name, where the skip rule and tools/results.py do not
# look, so the stale log is moved aside first; checkpoints stay, and training resumes.
set_aside_stale_log() {
    local run_dir="$1" stamp
    if [[ -f "$run_dir/log.txt" ]]; then
        stamp="$(date +%Y%m%d-%H%M%S)"
        mv "$run_dir/log.txt" "$run_dir/log.txt.interrupted-$stamp"
        echo "note: $run_dir has no result yet; its old log is now log.txt.interrupted-$stamp"
    fi
}

# OPTS split like a shell command line (quotes group words; nothing is executed). Its
# quoting was checked by validate_arguments, as a failure inside <(...) would go unseen.
parse_opts() {
    OPTS_ARRAY=()
    if [[ -n "${OPTS// /}" ]]; then
        mapfile -d '' OPTS_ARRAY < <(printf '%s' "$OPTS" | xargs printf '%s\0')
    fi
}

# Arguments of train.py shared by every run; the caller appends run-specific ones.
# Sets TRAIN_PY_ARGS.
base_train_py_args() {
    local dataset="$1" seed="$2"
    TRAIN_PY_ARGS=(
        --root "$DATA"
        --seed "$seed"
        --trainer "$TRAINER"
        --dataset-config-file "$(dataset_config_file "$dataset")"
        --config-file "$(trainer_config_file)"
    )
    if [[ -n "$BACKBONE" ]]; then
        TRAIN_PY_ARGS+=(--backbone "$BACKBONE")
    fi
}

# The train.py arguments (OPTS excluded) of the run that train.sh makes for TASK: base2new
# trains on the base classes, the other tasks on all classes. test.sh uses it to check that a
# model was trained as asked. Sets TRAIN_PY_ARGS.
training_run_args() {
    local task="$1" dataset="$2" seed="$3" shots="${4:-$SHOTS}"
    base_train_py_args "$dataset" "$seed"
    if is_eval_only; then
        TRAIN_PY_ARGS+=(--eval-only)
    else
        TRAIN_PY_ARGS+=(DATASET.NUM_SHOTS "$shots")
    fi
    if [[ "$task" == base2new ]]; then
        TRAIN_PY_ARGS+=(DATASET.SUBSAMPLE_CLASSES base)
    fi
}

# 0 when run_dir's config.yaml is the config these train.py arguments (OPTS appended) give, on
# every key that shapes the result; otherwise the reasons on stderr and 1. With --model as the
# first argument run_dir is a model to evaluate: only what is learned is compared, and its
# checkpoints must have reached the last epoch.
run_matches() {
    local mode=()
    if [[ "$1" == --model ]]; then
        mode=(--model)
        shift
    fi
    local run_dir="$1"
    shift
    "$PYTHON" "$REPO/tools/run_config.py" check "${mode[@]}" --source "$SOURCE_KEY" "$run_dir" "$@" "${OPTS_ARRAY[@]}"
}

# train.py, or NPROC processes of it under torchrun (one machine; --standalone picks a free port), through
# tools/torchrun.py so that a failed run ends with its workers' own lines, not torchrun's traceback.
launch_train_py() {
    if (( NPROC > 1 )); then
        "$PYTHON" "$REPO/tools/torchrun.py" --standalone --nproc_per_node "$NPROC" "$REPO/train.py" "$@"
    else
        "$PYTHON" "$REPO/train.py" "$@"
    fi
}

# Run train.py into run_dir unless a result made with the same config is there already; a
# result made with another config is refused, as reusing it would report the old config's
# number. Arguments after run_dir are train.py's flags, then its trailing KEY VALUE options;
# OPTS comes last so it wins.
run_once() {
    local run_dir="$1"
    shift
    if has_result "$run_dir"; then
        if run_matches "$run_dir" "$@"; then
            echo "skip: $run_dir already holds a result of this config"
            return 0
        fi
        echo "error: $run_dir holds a result of another config (above); use another TAG or OUTPUT, or delete that folder to run again" >&2
        exit 1
    fi
    set_aside_stale_log "$run_dir"
    echo "run:  $run_dir"
    launch_train_py --output-dir "$run_dir" "$@" "${OPTS_ARRAY[@]}"
    if ! has_result "$run_dir"; then
        echo "error: train.py finished but $run_dir/log.txt holds no '* accuracy:' line after '=> result'" >&2
        exit 1
    fi
    # So that a rerun recognises this run from its arguments, without building the config again (without the
    # record, a rerun compares the full config instead: slower, as exact).
    "$PYTHON" "$REPO/tools/run_config.py" record --source "$SOURCE_KEY" "$run_dir" "$@" "${OPTS_ARRAY[@]}" \
        || echo "warning: could not write $run_dir/config_request.json; a rerun will compare the full config" >&2
}
