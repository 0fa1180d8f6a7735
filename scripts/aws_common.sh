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
