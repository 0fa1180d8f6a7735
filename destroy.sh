#!/usr/bin/env bash
#
# Removes what deploy.sh created: deletes the stacks <prefix>-mwaa, -ecs, -ami, -image, -network
# and -storage in that order, waiting for each, after emptying the storage stack's buckets (every
# object version and delete marker: the MWAA bucket is versioned). Before the ECS stack it scales
# the group to 0 and waits until no container instance is left in the cluster (a cluster with
# instances still registered cannot be deleted); after it, it deletes the log groups ECS and MWAA
# create themselves. Before the ami stack it removes the AMIs it baked: EC2 Fast Launch off (its
# pre-provisioned snapshots go), then the AMI and its snapshots, which deleting the Image Builder
# image does not remove. Asks first unless --yes.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly PROGRAM="destroy.sh"
# shellcheck source=scripts/aws_common.sh
source "${SCRIPT_DIR}/scripts/aws_common.sh"

readonly LAYERS_IN_DELETE_ORDER=(mwaa ecs ami image network storage)
# What bills while no study runs (MWAA, NAT gateway); storage (buckets, results, DAG code), image
# (the built image) and ami (the baked AMI) stay, so ./deploy.sh resumes without a rebuild.
readonly LAYERS_PAUSED=(mwaa ecs network)
readonly BUCKET_OUTPUTS=(ResultsBucketName MwaaBucketName AccessLogsBucketName)
# Log records can still arrive while the buckets are deleted; the storage stack is retried.
readonly STORAGE_DELETE_ATTEMPTS=3
# MWAA can take longer to delete than the CLI's stack-delete-complete waiter (60 minutes).
readonly STACK_DELETE_TIMEOUT_SECONDS="${DESTROY_STACK_DELETE_TIMEOUT_SECONDS:-10800}"
readonly DRAIN_TIMEOUT_SECONDS="${DESTROY_DRAIN_TIMEOUT_SECONDS:-1800}"
readonly POLL_SECONDS="${DESTROY_POLL_SECONDS:-30}"

region=""
prefix="windows-batch"
assume_yes="false"
pause="false"

usage() {
  cat <<EOF
Usage: ./destroy.sh [options]

Deletes the stacks deploy.sh created (<prefix>-mwaa, -ecs, -ami, -image, -network, -storage),
after emptying the buckets of the storage stack, including every object version. This deletes
all study results. Before the ECS stack the instance group is scaled to 0 and the cluster
drained; before the ami stack its baked AMIs go (EC2 Fast Launch disabled, which deletes its
pre-provisioned snapshots, then each AMI deregistered and its snapshots deleted); the log groups
ECS, MWAA and Image Builder created themselves go too. Waits for each stack up to
DESTROY_STACK_DELETE_TIMEOUT_SECONDS (default 3 hours; MWAA alone can exceed an hour).
Asks for confirmation unless --yes is given.

--pause deletes only what bills while no study runs (<prefix>-mwaa, -ecs, -network: MWAA and
the NAT gateway) and keeps the buckets (results, DAGs), the image and the baked AMI (its
snapshots keep billing; see the README); ./deploy.sh with the same options resumes, without
rebuilding the image or the AMI.

Options:
  --region REGION   AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the CLI profile's)
  --prefix PREFIX   stack-name prefix used with deploy.sh (default: ${prefix})
  --pause           delete only the billing-while-idle stacks; keep buckets, image, baked AMI
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
      --pause) pause="true"; shift ;;
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

# Prints one output of a stack, or nothing.
stack_output() {
  local value
  value="$(awsr cloudformation describe-stacks --stack-name "$1" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue | [0]" --output text 2>/dev/null)" \
    || return 0
  [[ "${value}" == "None" ]] || echo "${value}"
}

# Deletes a stack and polls until it is gone, with a deadline of our own: the CLI's waiter gives
# up after 60 minutes, and an MWAA environment can take longer to delete.
delete_stack() {
  local stack="$1" status deadline=$((SECONDS + STACK_DELETE_TIMEOUT_SECONDS))
  log "Deleting stack ${stack}"
  awsr cloudformation delete-stack --stack-name "${stack}"
  while true; do
    status="$(awsr cloudformation describe-stacks --stack-name "${stack}" \
      --query 'Stacks[0].StackStatus' --output text 2>/dev/null)" || return 0
    case "${status}" in
      DELETE_COMPLETE) return 0 ;;
      DELETE_FAILED)
        err "deleting ${stack} failed; its events say why"
        return 1
        ;;
    esac
    ((SECONDS < deadline)) \
      || die "${stack} is still ${status} after ${STACK_DELETE_TIMEOUT_SECONDS} s; run destroy.sh again later"
    echo "${stack}: ${status}"
    sleep "${POLL_SECONDS}"
  done
}

# Scales the group to 0 and waits until its instances are gone and no container instance is left
# registered: DeleteCluster refuses a cluster that still has active or draining instances, and a
# terminated instance leaves the cluster only some time after it is gone.
drain_cluster() {
  local stack="${prefix}-ecs" group cluster count deadline=$((SECONDS + DRAIN_TIMEOUT_SECONDS))
  group="$(stack_output "${stack}" AutoScalingGroupName)"
  cluster="$(stack_output "${stack}" ClusterName)"
  [[ -n "${group}" && -n "${cluster}" ]] || return 0
  log "Scaling ${group} to 0 and draining ${cluster}"
  awsr autoscaling update-auto-scaling-group --auto-scaling-group-name "${group}" \
    --min-size 0 --desired-capacity 0
  while true; do
    count="$(awsr autoscaling describe-auto-scaling-groups --auto-scaling-group-names "${group}" \
      --query 'length(AutoScalingGroups[0].Instances)' --output text)"
    [[ "${count}" == "0" || "${count}" == "None" ]] && break
    ((SECONDS < deadline)) || die "${group} still has ${count} instance(s) after ${DRAIN_TIMEOUT_SECONDS} s"
    echo "${group}: waiting for ${count} instance(s) to terminate"
    sleep "${POLL_SECONDS}"
  done
  local instance status
  for status in ACTIVE DRAINING; do
    for instance in $(awsr ecs list-container-instances --cluster "${cluster}" --status "${status}" \
      --query 'containerInstanceArns[]' --output text); do
      [[ "${instance}" != "None" ]] || continue
      # Its EC2 instance is terminated; ECS has not noticed yet.
      awsr ecs deregister-container-instance --cluster "${cluster}" \
        --container-instance "${instance}" --force >/dev/null
      echo "deregistered ${instance##*/} (instance already terminated)"
    done
  done
}

# Deletes every log group whose name starts with $1.
delete_log_groups() {
  local group
  for group in $(awsr logs describe-log-groups --log-group-name-prefix "$1" \
    --query 'logGroups[].logGroupName' --output text); do
    [[ "${group}" != "None" ]] || continue
    awsr logs delete-log-group --log-group-name "${group}"
    echo "deleted log group ${group}"
  done
}

confirm() {
  local -a stacks=("$@")
  local -a buckets=()
  [[ "${pause}" == "true" ]] || mapfile -t buckets < <(storage_buckets)
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

  local -a stacks=() layers=("${LAYERS_IN_DELETE_ORDER[@]}")
  local layer
  [[ "${pause}" == "false" ]] || layers=("${LAYERS_PAUSED[@]}")
  for layer in "${layers[@]}"; do
    if stack_exists "${prefix}-${layer}"; then
      stacks+=("${prefix}-${layer}")
    fi
  done
  if [[ "${#stacks[@]}" -eq 0 ]]; then
    echo "No stacks named ${prefix}-* in ${region}; nothing to delete."
    return 0
  fi
  confirm "${stacks[@]}"

  local stack attempt bucket cluster
  for stack in "${stacks[@]}"; do
    if [[ "${stack}" == "${prefix}-ecs" ]]; then
      cluster="$(stack_output "${stack}" ClusterName)"
      drain_cluster
      delete_stack "${stack}" || die "could not delete ${stack}; see its events"
      # Container Insights creates this group itself; the stack does not own it.
      delete_log_groups "/aws/ecs/containerinsights/${cluster:-${prefix}-ecs-cluster}/"
      continue
    fi
    if [[ "${stack}" == "${prefix}-ami" ]]; then
      remove_baked_amis "${stack}" ""
      delete_stack "${stack}" || die "could not delete ${stack}; see its events"
      continue
    fi
    if [[ "${stack}" != "${prefix}-storage" ]]; then
      delete_stack "${stack}" || die "could not delete ${stack}; see its events"
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
  # MWAA creates its log groups (airflow-<environment>-*) itself; the stack does not own them.
  delete_log_groups "airflow-${prefix}-mwaa-"
  if [[ "${pause}" == "true" ]]; then
    log "Paused: buckets, image and baked AMI kept; ./deploy.sh with the same options resumes"
    return 0
  fi
  # The build instance's logs (Image Builder names the group after the recipe, <prefix>-ami-<tag>).
  delete_log_groups "/aws/imagebuilder/${prefix}-ami-"
  log "Done: everything deploy.sh created with prefix ${prefix} is gone"
}

main "$@"
