#!/usr/bin/env bash
#
# Removes what deploy.sh created: deletes the stacks <prefix>-mwaa, -ecs, -image, -network and
# -storage in that order, waiting for each, after emptying the storage stack's buckets (every
# object version and delete marker: the MWAA bucket is versioned). Asks first unless --yes.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly PROGRAM="destroy.sh"
# shellcheck source=scripts/aws_common.sh
source "${SCRIPT_DIR}/scripts/aws_common.sh"

readonly LAYERS_IN_DELETE_ORDER=(mwaa ecs image network storage)
readonly BUCKET_OUTPUTS=(ResultsBucketName MwaaBucketName AccessLogsBucketName)
# Log records can still arrive while the buckets are deleted; the storage stack is retried.
readonly STORAGE_DELETE_ATTEMPTS=3

region=""
prefix="windows-batch"
assume_yes="false"

usage() {
  cat <<EOF
Usage: ./destroy.sh [options]

Deletes the stacks deploy.sh created (<prefix>-mwaa, -ecs, -image, -network, -storage), after
emptying the buckets of the storage stack, including every object version. This deletes all
study results. Asks for confirmation unless --yes is given.

Options:
  --region REGION   AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the CLI profile's)
  --prefix PREFIX   stack-name prefix used with deploy.sh (default: ${prefix})
  -y, --yes         do not ask for confirmation
  -h, --help        show this help
EOF
}

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --region) region="${2:?--region needs a value}"; shift 2 ;;
      --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
      -y | --yes) assume_yes="true"; shift ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown option: $1" ;;
    esac
  done
  validate_prefix
}

stack_exists() {
  awsr cloudformation describe-stacks --stack-name "$1" >/dev/null 2>&1
}

# Prints the storage stack's bucket names that still exist, one per line.
storage_buckets() {
  local stack="${prefix}-storage" output bucket
  stack_exists "${stack}" || return 0
  for output in "${BUCKET_OUTPUTS[@]}"; do
    bucket="$(awsr cloudformation describe-stacks --stack-name "${stack}" \
      --query "Stacks[0].Outputs[?OutputKey=='${output}'].OutputValue | [0]" --output text)"
    if [[ -n "${bucket}" && "${bucket}" != "None" ]] \
      && awsr s3api head-bucket --bucket "${bucket}" >/dev/null 2>&1; then
      echo "${bucket}"
    fi
  done
}

# Deletes every object version and delete marker, 500 + 500 at a time (DeleteObjects takes 1000).
empty_bucket() {
  local bucket="$1" batch deleted=0
  while true; do
    # shellcheck disable=SC2016  # the backticks are a JMESPath literal, not a shell expansion
    batch="$(awsr s3api list-object-versions --bucket "${bucket}" --max-items 500 --output json \
      --query '{Objects: [Versions[].{Key: Key, VersionId: VersionId}, DeleteMarkers[].{Key: Key, VersionId: VersionId}][], Quiet: `true`}')"
    [[ "${batch}" == *'"Key"'* ]] || break
    awsr s3api delete-objects --bucket "${bucket}" --delete "${batch}" >/dev/null
    deleted=$((deleted + 1))
  done
  echo "emptied s3://${bucket} (${deleted} batch(es) deleted)"
}

delete_stack() {
  local stack="$1"
  log "Deleting stack ${stack}"
  awsr cloudformation delete-stack --stack-name "${stack}"
  awsr cloudformation wait stack-delete-complete --stack-name "${stack}"
}

# MWAA creates its log groups (airflow-<environment>-*) itself; the stack does not own them.
delete_mwaa_log_groups() {
  local group
  for group in $(awsr logs describe-log-groups --log-group-name-prefix "airflow-${prefix}-mwaa-" \
    --query 'logGroups[].logGroupName' --output text); do
    [[ "${group}" != "None" ]] || continue
    awsr logs delete-log-group --log-group-name "${group}"
    echo "deleted log group ${group}"
  done
}

confirm() {
  local -a stacks=("$@")
  local -a buckets
  mapfile -t buckets < <(storage_buckets)
  echo "This deletes, in region ${region}:"
  printf '  stack  %s\n' "${stacks[@]}"
  if [[ "${#buckets[@]}" -gt 0 ]]; then
    printf '  bucket %s (every object and version: all study results)\n' "${buckets[@]}"
  fi
  [[ "${assume_yes}" == "true" ]] && return 0
  local answer=""
  read -r -p "Type 'yes' to continue: " answer || true
  [[ "${answer}" == "yes" ]] || die "not confirmed; nothing deleted"
}

main() {
  parse_args "$@"
  check_aws_prerequisites
  log "Signed in as ${caller_arn}; looking for stacks ${prefix}-* in ${region}"

  local -a stacks=()
  local layer
  for layer in "${LAYERS_IN_DELETE_ORDER[@]}"; do
    if stack_exists "${prefix}-${layer}"; then
      stacks+=("${prefix}-${layer}")
    fi
  done
  if [[ "${#stacks[@]}" -eq 0 ]]; then
    echo "No stacks named ${prefix}-* in ${region}; nothing to delete."
    return 0
  fi
  confirm "${stacks[@]}"

  local stack attempt bucket
  for stack in "${stacks[@]}"; do
    if [[ "${stack}" != "${prefix}-storage" ]]; then
      delete_stack "${stack}"
      continue
    fi
    for ((attempt = 1; ; attempt++)); do
      while read -r bucket; do
        empty_bucket "${bucket}"
      done < <(storage_buckets)
      if delete_stack "${stack}"; then
        break
      fi
      ((attempt < STORAGE_DELETE_ATTEMPTS)) || die "could not delete ${stack}; see its events"
      err "deleting ${stack} failed (attempt ${attempt}); emptying the buckets again"
    done
  done
  delete_mwaa_log_groups
  log "Done: everything deploy.sh created with prefix ${prefix} is gone"
}

main "$@"
