# shellcheck shell=bash
# The globals region and prefix belong to the sourcing script:
# shellcheck disable=SC2154
#
# What deploy.sh and destroy.sh share: messages, the AWS CLI in the chosen region, the stack
# prefix rule and the prerequisite check. Sourced, never run; the caller sets PROGRAM and the
# globals `region` and `prefix`.

err() {
  echo "${PROGRAM}: error: $*" >&2
}

die() {
  err "$@"
  exit 1
}

log() {
  echo "==> $*"
}

# Runs the AWS CLI in the chosen region.
awsr() {
  aws --region "${region}" "$@"
}

# Stack names are <prefix>-<layer>; the prefix also names buckets and roles, hence the rule.
validate_prefix() {
  [[ "${prefix}" =~ ^[a-z][a-z0-9-]{0,22}$ ]] \
    || die "--prefix must be lowercase letters, digits and '-', start with a letter, at most 23 characters"
}

# Stops with a clear message when the AWS CLI, a region or valid credentials are missing.
# Sets `region` (from --region, AWS_REGION, AWS_DEFAULT_REGION or the CLI's profile) and
# `caller_arn`.
check_aws_prerequisites() {
  command -v aws >/dev/null 2>&1 \
    || die "the AWS CLI ('aws') is not on PATH; install AWS CLI v2 and run 'aws configure'"
  if [[ -z "${region}" ]]; then
    region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  fi
  if [[ -z "${region}" ]]; then
    region="$(aws configure get region 2>/dev/null || true)"
  fi
  [[ -n "${region}" ]] \
    || die "no AWS region set; pass --region (for example --region us-east-1) or run 'aws configure set region us-east-1'"
  caller_arn="$(awsr sts get-caller-identity --query Arn --output text 2>&1)" \
    || die "AWS credentials are missing or invalid ('aws sts get-caller-identity' failed: ${caller_arn}); run 'aws configure' or 'aws sso login'"
}

# Tag the ami stack's distribution puts on every AMI it bakes (cloudformation/ami.yaml).
readonly BAKED_AMI_TAG="windows-batch-compute:ami-stack"
readonly FAST_LAUNCH_POLL_SECONDS="${FAST_LAUNCH_POLL_SECONDS:-20}"
readonly FAST_LAUNCH_DISABLE_TIMEOUT_SECONDS="${FAST_LAUNCH_DISABLE_TIMEOUT_SECONDS:-3600}"

# EC2 Fast Launch's state for an AMI (enabling, enabled, disabling, ...-failed), or nothing
# when Fast Launch is off for it.
fast_launch_state() {
  local state
  state="$(awsr ec2 describe-fast-launch-images --image-ids "$1" \
    --query 'FastLaunchImages[0].State' --output text)"
  [[ "${state}" == "None" ]] || echo "${state}"
}

# Removes every AMI the ami stack $1 baked except $2 (may be empty), so nothing bills after it:
# Fast Launch is disabled first, which is what deletes its pre-provisioned snapshots (EC2
# DisableFastLaunch), and awaited; then the AMI is deregistered and its own snapshots deleted.
# Deleting the stack's AWS::ImageBuilder::Image does none of this: Image Builder's DeleteImage
# "does not delete any EC2 AMIs" (Image Builder API reference).
remove_baked_amis() {
  local stack="$1" keep="${2:-}" listed ami state snapshot deadline
  local -a amis snapshots
  listed="$(awsr ec2 describe-images --owners self \
    --filters "Name=tag:${BAKED_AMI_TAG},Values=${stack}" --query 'Images[].ImageId' --output text)"
  read -r -a amis <<<"${listed}"
  for ami in "${amis[@]}"; do
    [[ "${ami}" != "None" && "${ami}" != "${keep}" ]] || continue
    state="$(fast_launch_state "${ami}")"
    if [[ -n "${state}" && "${state}" != "disabling" ]]; then
      local -a force=()
      [[ "${state}" != *-failed ]] || force=(--force)
      awsr ec2 disable-fast-launch --image-id "${ami}" "${force[@]}" >/dev/null
      echo "disabling EC2 Fast Launch for ${ami} (deletes its pre-provisioned snapshots)"
    fi
    deadline=$((SECONDS + FAST_LAUNCH_DISABLE_TIMEOUT_SECONDS))
    while true; do
      state="$(fast_launch_state "${ami}")"
      [[ -n "${state}" ]] || break
      ((SECONDS < deadline)) \
        || die "EC2 Fast Launch for ${ami} is still ${state} after ${FAST_LAUNCH_DISABLE_TIMEOUT_SECONDS} s; run again later"
      echo "${ami}: Fast Launch ${state}"
      sleep "${FAST_LAUNCH_POLL_SECONDS}"
    done
    listed="$(awsr ec2 describe-images --image-ids "${ami}" \
      --query 'Images[0].BlockDeviceMappings[].Ebs.SnapshotId' --output text)"
    read -r -a snapshots <<<"${listed}"
    awsr ec2 deregister-image --image-id "${ami}"
    for snapshot in "${snapshots[@]}"; do
      [[ "${snapshot}" != "None" ]] || continue
      awsr ec2 delete-snapshot --snapshot-id "${snapshot}"
    done
    echo "removed baked AMI ${ami} and its snapshot(s) ${snapshots[*]}"
  done
}
