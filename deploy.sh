#!/usr/bin/env bash
#
# Deploys windows-batch-compute to AWS with the AWS CLI: the storage, network, image, ECS and
# MWAA CloudFormation stacks (in that order, each fed the outputs of the ones before), the DAGs,
# the MWAA requirements file and plugins.zip (the Results view). Optionally builds the Windows
# workload image on a short-lived Windows Server 2022 instance driven by SSM Run Command, and
# bakes it into an AMI with EC2 Image Builder and EC2 Fast Launch (--bake-ami, the ami stack). A
# preflight (--check) runs first and stops on anything that would make the deploy fail. Safe to
# re-run: unchanged stacks and files are left as they are and it exits 0.

set -euo pipefail
# The image build runs in a command substitution ($(...)); its failures must stop the script too.
shopt -s inherit_errexit

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly PROGRAM="deploy.sh"
# shellcheck source=scripts/aws_common.sh
source "${SCRIPT_DIR}/scripts/aws_common.sh"
readonly TEMPLATE_DIR="${SCRIPT_DIR}/cloudformation"
readonly DAGS_DIR="${SCRIPT_DIR}/dags"
readonly DOCKER_DIR="${SCRIPT_DIR}/docker"
readonly REQUIREMENTS_FILE="${SCRIPT_DIR}/requirements-mwaa.txt"
readonly REQUIREMENTS_KEY="requirements/requirements-mwaa.txt"
readonly PLUGINS_DIR="${SCRIPT_DIR}/plugins"
readonly PLUGINS_KEY="plugins/plugins.zip"
readonly SOURCE_KEY="build/docker-source.zip"
readonly DAG_ID="windows-batch-compute-dag"
readonly LAYERS=(storage network image ami ecs upload mwaa)
# Seconds between two looks at a running image build (tests shorten it).
readonly BUILD_POLL_SECONDS="${DEPLOY_BUILD_POLL_SECONDS:-20}"
# A new Windows instance takes many minutes to boot and register with SSM.
readonly BUILDER_REGISTER_TIMEOUT_SECONDS="${DEPLOY_BUILDER_REGISTER_TIMEOUT_SECONDS:-1800}"
# Service codes of AWS's public region table (SSM /aws/service/global-infrastructure).
readonly REQUIRED_SERVICES=(cloudformation s3 ec2 ecs ecr ssm logs autoscaling mwaa)
readonly WINDOWS_AMI_PARAMETER="/aws/service/ami-windows-latest/Windows_Server-2022-English-Full-ECS_Optimized/image_id"
# Service Quotas: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", in vCPUs.
readonly STANDARD_VCPU_QUOTA_CODE="L-1216C47A"
# All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests, in vCPUs.
readonly SPOT_VCPU_QUOTA_CODE="L-34B43A08"
# Windows reports less memory than the instance type's nominal figure (firmware, hypervisor); the
# agent registers what Windows reports minus ECS_RESERVED_MEMORY. Plan with 95 % of nominal.
readonly REPORTED_MEMORY_PERCENT=95
# Types of one size that run the Windows Server 2022 ECS AMI; the first is the on-demand priority.
readonly DEFAULT_INSTANCE_TYPES="c5.xlarge,c5a.xlarge,c6i.xlarge,m5.xlarge"
# ecs.yaml's InstanceType, InstanceType2, InstanceType3, InstanceType4.
readonly MAX_INSTANCE_TYPES=4
# The DAG's estimate (windows_batch.boot_s / pull_s, cost.py). Without a baked AMI: cost.py's
# defaults. AWS says a Windows launch takes "15 minutes or longer" and Fast Launch launches "up
# to 65% faster" (EC2 User Guide, EC2 Fast Launch): 900 s x 0.35. The baked AMI has the image in
# Docker's cache and the agent's prefer-cached pull behaviour uses it: no pull.
readonly PUBLIC_AMI_BOOT_SECONDS=900
readonly PUBLIC_AMI_PULL_SECONDS=300
readonly BAKED_AMI_BOOT_SECONDS=315
readonly BAKED_AMI_PULL_SECONDS=0
# Image Builder's Windows build plus the Fast Launch distribution can outlast the CLI's 60-minute
# stack waiter; deploy.sh then keeps polling the stack itself, up to this long.
readonly AMI_BAKE_TIMEOUT_SECONDS="${DEPLOY_AMI_BAKE_TIMEOUT_SECONDS:-14400}"

region=""
prefix="windows-batch"
# Empty = keep what the ECS stack has (or the default on the first deploy): resolve_capacity.
instance_types=""
purchase_option=""
on_demand_base=""
max_instances="10"
task_cpu="1024"
task_memory_mib="1536"
reserved_memory_mib="2048"
slots_per_instance=""
image_uri=""
build_image="false"
# "" = keep the previous choice: baked when the ami stack exists.
bake_ami=""
baking="false"
check_only="false"
assume_yes="false"
webserver_access="PUBLIC_ONLY"
environment_class="mw1.small"
nat_gateways="1"
rdp_cidr=""
skip_layers=()

usage() {
  cat <<EOF
Usage: ./deploy.sh [options]

Deploys (or updates) windows-batch-compute in one AWS region: stacks <prefix>-storage,
<prefix>-network, <prefix>-image, (with --bake-ami) <prefix>-ami, <prefix>-ecs and
<prefix>-mwaa, then uploads dags/, requirements-mwaa.txt and plugins.zip (plugins/, the Results
view) to the MWAA bucket. Re-running with nothing changed changes nothing.
Options not given take their defaults on every run, except the capacity options
(--instance-types, --spot/--on-demand, --on-demand-base), which keep what the ECS stack has,
and the baked AMI (kept until --no-bake-ami).

Options:
  --region REGION          AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the CLI profile's)
  --prefix PREFIX          stack-name prefix, lowercase (default: ${prefix})
  --instance-types T1,T2   up to ${MAX_INSTANCE_TYPES} ECS container instance types of one size (x86_64, able to
                           run the Windows Server 2022 ECS AMI); the first has the on-demand priority.
                           Tasks per instance = the minimum over them. (default on the first
                           deploy: ${DEFAULT_INSTANCE_TYPES})
  --instance-type TYPE     one instance type only (same as --instance-types TYPE)
  --spot                   launch Spot instances above the on-demand base (price-capacity-
                           optimized over the types, capacity rebalancing); an interruption
                           costs time, not a retry
  --on-demand              launch on-demand instances only (the default on the first deploy)
  --on-demand-base N       with --spot, the first N instances are on-demand (default: 0)
  --max-instances N        upper bound of the Auto Scaling group (default: ${max_instances})
  --task-cpu UNITS         CPU units per task, 1024 = 1 vCPU (default: ${task_cpu})
  --task-memory MIB        memory per task in MiB (default: ${task_memory_mib})
  --slots-per-instance N   tasks per instance (default: computed from the instance type)
  --image-uri URI          run this container image instead of the image stack's repository
  --build-image            build docker/ on a short-lived Windows Server 2022 instance (SSM Run
                           Command) and run that image; skipped when that image already exists.
                           Without either flag the image built from the current docker/ must exist.
  --bake-ami               bake that image into an AMI (EC2 Image Builder, stack <prefix>-ami: about
                           an hour for each new image) with EC2 Fast Launch, and launch the
                           instances from it: no image pull and a shorter Windows boot. Costs its
                           EBS snapshots while it exists (README). A re-run keeps it (and bakes a
                           new image again); --no-bake-ami returns to the public AMI and removes
                           the ami stack, its AMIs and their snapshots.
  --webserver-access MODE  PUBLIC_ONLY (default; AWS sign-in) or PRIVATE_ONLY (VPC only)
  --environment-class C    MWAA size (default: ${environment_class})
  --nat-gateways 1|2       1 shared NAT gateway (default, cheaper) or one per AZ
  --rdp-cidr CIDR          allow RDP to the instances from CIDR (default: no inbound access)
  --skip LAYER[,LAYER]     leave these steps out; later steps read the outputs of the existing
                           stacks. Steps: ${LAYERS[*]}
  --check                  only run the preflight (credentials, region, vCPU quota, stacks,
                           image) and print it; changes nothing. deploy.sh always runs it first.
  -y, --yes                do not ask before deleting a stack left in ROLLBACK_COMPLETE
  -h, --help               show this help

Needs the AWS CLI (v2; v1 works too) with credentials; --build-image also needs zip.
EOF
}

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --region) region="${2:?--region needs a value}"; shift 2 ;;
      --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
      --instance-types) instance_types="${2:?--instance-types needs a value}"; shift 2 ;;
      --instance-type) instance_types="${2:?--instance-type needs a value}"; shift 2 ;;
      --spot) purchase_option="spot"; shift ;;
      --on-demand) purchase_option="on-demand"; shift ;;
      --on-demand-base) on_demand_base="${2:?--on-demand-base needs a value}"; shift 2 ;;
      --max-instances) max_instances="${2:?--max-instances needs a value}"; shift 2 ;;
      --task-cpu) task_cpu="${2:?--task-cpu needs a value}"; shift 2 ;;
      --task-memory) task_memory_mib="${2:?--task-memory needs a value}"; shift 2 ;;
      --slots-per-instance) slots_per_instance="${2:?--slots-per-instance needs a value}"; shift 2 ;;
      --image-uri) image_uri="${2:?--image-uri needs a value}"; shift 2 ;;
      --build-image) build_image="true"; shift ;;
      --bake-ami) bake_ami="true"; shift ;;
      --no-bake-ami) bake_ami="false"; shift ;;
      --check) check_only="true"; shift ;;
      -y | --yes) assume_yes="true"; shift ;;
      --webserver-access) webserver_access="${2:?--webserver-access needs a value}"; shift 2 ;;
      --environment-class) environment_class="${2:?--environment-class needs a value}"; shift 2 ;;
      --nat-gateways) nat_gateways="${2:?--nat-gateways needs a value}"; shift 2 ;;
      --rdp-cidr) rdp_cidr="${2:?--rdp-cidr needs a value}"; shift 2 ;;
      --skip)
        local -a parts
        IFS=',' read -r -a parts <<<"${2:?--skip needs a value}"
        skip_layers+=("${parts[@]}")
        shift 2
        ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown option: $1" ;;
    esac
  done
}

validate_args() {
  validate_prefix
  local number
  for number in "${max_instances}" "${task_cpu}" "${task_memory_mib}" ${slots_per_instance:+"${slots_per_instance}"}; do
    [[ "${number}" =~ ^[1-9][0-9]*$ ]] || die "not a positive whole number: ${number}"
  done
  [[ -z "${on_demand_base}" || "${on_demand_base}" =~ ^(0|[1-9][0-9]*)$ ]] \
    || die "--on-demand-base must be a whole number: ${on_demand_base}"
  [[ -z "${on_demand_base}" || "${purchase_option}" != "on-demand" ]] \
    || die "--on-demand-base applies to --spot only (with --on-demand every instance is on-demand)"
  if [[ -n "${instance_types}" ]]; then
    validate_instance_types
  fi
  [[ "${webserver_access}" == "PUBLIC_ONLY" || "${webserver_access}" == "PRIVATE_ONLY" ]] \
    || die "--webserver-access must be PUBLIC_ONLY or PRIVATE_ONLY"
  [[ "${nat_gateways}" == "1" || "${nat_gateways}" == "2" ]] || die "--nat-gateways must be 1 or 2"
  [[ "${build_image}" == "false" || -z "${image_uri}" ]] \
    || die "--build-image and --image-uri exclude each other"
  [[ "${bake_ami}" != "true" || -z "${image_uri}" ]] \
    || die "--bake-ami bakes the image stack's image; it excludes --image-uri"
  local layer
  for layer in "${skip_layers[@]}"; do
    [[ " ${LAYERS[*]} " == *" ${layer} "* ]] || die "unknown step for --skip: ${layer} (steps: ${LAYERS[*]})"
  done
}

# The list's form only; resolve_capacity checks each type against EC2.
validate_instance_types() {
  local -a types
  local type seen=" "
  IFS=',' read -r -a types <<<"${instance_types}"
  ((${#types[@]} >= 1 && ${#types[@]} <= MAX_INSTANCE_TYPES)) \
    || die "--instance-types takes 1 to ${MAX_INSTANCE_TYPES} types (the template has ${MAX_INSTANCE_TYPES} slots): ${instance_types}"
  for type in "${types[@]}"; do
    [[ "${type}" =~ ^[a-z][a-z0-9-]*\.[a-z0-9]+$ ]] \
      || die "not an EC2 instance type: '${type}' in --instance-types ${instance_types}"
    [[ "${seen}" != *" ${type} "* ]] || die "instance type ${type} is listed twice in --instance-types"
    seen+="${type} "
  done
}

# A capacity option not given keeps the ECS stack's value (re-running changes nothing), else
# the default. Reads the stack's parameters, not its outputs: an old stack may have no outputs.
resolve_capacity() {
  local stack previous="" name value
  local -A parameters=()
  stack="$(stack_name ecs)"
  if [[ -z "${instance_types}" || -z "${purchase_option}" || -z "${on_demand_base}" ]]; then
    previous="$(awsr cloudformation describe-stacks --stack-name "${stack}" \
      --query 'Stacks[0].Parameters[].[ParameterKey, ParameterValue]' --output text 2>/dev/null)" \
      || previous=""
  fi
  while IFS=$'\t' read -r name value; do
    [[ -n "${name}" ]] && parameters["${name}"]="${value}"
  done <<<"${previous}"
  if [[ -z "${instance_types}" && -n "${parameters[InstanceType]:-}" ]]; then
    instance_types="${parameters[InstanceType]}"
    for name in InstanceType2 InstanceType3 InstanceType4; do
      value="${parameters[${name}]:-}"
      [[ -z "${value}" || "${value}" == "None" ]] || instance_types+=",${value}"
    done
    log "Instance types ${instance_types} (kept from stack ${stack})"
  fi
  if [[ -z "${purchase_option}" && -n "${parameters[PurchaseOption]:-}" ]]; then
    purchase_option="${parameters[PurchaseOption]}"
    log "Purchase option ${purchase_option} (kept from stack ${stack})"
  fi
  if [[ -z "${on_demand_base}" && -n "${parameters[OnDemandBaseCapacity]:-}" ]]; then
    on_demand_base="${parameters[OnDemandBaseCapacity]}"
  fi
  instance_types="${instance_types:-${DEFAULT_INSTANCE_TYPES}}"
  purchase_option="${purchase_option:-on-demand}"
  on_demand_base="${on_demand_base:-0}"
  validate_instance_types
}

# The ECS stack's InstanceType, InstanceType2..4 parameters from the list (empty = unused).
instance_type_parameters() {
  local -a types
  local i name
  IFS=',' read -r -a types <<<"${instance_types}"
  for ((i = 0; i < MAX_INSTANCE_TYPES; i++)); do
    name="InstanceType"
    ((i == 0)) || name+="$((i + 1))"
    echo "${name}=${types[i]:-}"
  done
}

# The AWS prerequisites, and zip when the image is built.
check_prerequisites() {
  check_aws_prerequisites
  command -v python3 >/dev/null 2>&1 || die "deploy.sh needs python3 (it builds plugins.zip)"
  if [[ "${build_image}" == "true" ]]; then
    command -v zip >/dev/null 2>&1 || die "--build-image needs 'zip' (apt-get install zip)"
  fi
  log "Deploying as ${caller_arn} to ${region}, stacks ${prefix}-*"
}

skipped() {
  [[ " ${skip_layers[*]} " == *" $1 "* ]]
}

stack_name() {
  echo "${prefix}-$1"
}

# Prints one output of a stack, failing when the stack or the output does not exist.
# Outputs of the stacks this run deployed, by "<stack>/<key>": one describe-stacks per stack
# instead of one per output read. deploy_stack fills it (in this shell, so that the $(...) of
# stack_output sees it); a stack it does not hold is read from CloudFormation.
declare -A STACK_OUTPUTS=()

forget_outputs() {
  local key
  for key in "${!STACK_OUTPUTS[@]}"; do
    [[ "${key}" == "$1/"* ]] && unset 'STACK_OUTPUTS[${key}]'
  done
  return 0
}

load_outputs() {
  local stack="$1" key value
  forget_outputs "${stack}"
  while IFS=$'\t' read -r key value; do
    [[ -n "${key}" && "${key}" != "None" ]] && STACK_OUTPUTS["${stack}/${key}"]="${value}"
  done < <(awsr cloudformation describe-stacks --stack-name "${stack}" \
    --query 'Stacks[0].Outputs[].[OutputKey, OutputValue]' --output text 2>/dev/null || true)
}

stack_output() {
  local stack="$1" key="$2" value
  if [[ -n "${STACK_OUTPUTS["${stack}/${key}"]+set}" ]]; then
    echo "${STACK_OUTPUTS["${stack}/${key}"]}"
    return 0
  fi
  value="$(awsr cloudformation describe-stacks --stack-name "${stack}" \
    --query "Stacks[0].Outputs[?OutputKey=='${key}'].OutputValue | [0]" --output text)" \
    || die "cannot read stack ${stack}; deploy it first (without --skip)"
  [[ -n "${value}" && "${value}" != "None" ]] || die "stack ${stack} has no output ${key}"
  echo "${value}"
}

# Prints the stack's status, or NONE when it does not exist.
stack_status() {
  local status
  status="$(awsr cloudformation describe-stacks --stack-name "$1" \
    --query 'Stacks[0].StackStatus' --output text 2>/dev/null)" || status="NONE"
  echo "${status:-NONE}"
}

# Asks a yes/no question on the terminal (or stdin); --yes answers yes.
confirm() {
  local question="$1" answer=""
  [[ "${assume_yes}" == "true" ]] && return 0
  read -r -p "${question} Type 'yes' to continue: " answer || true
  [[ "${answer}" == "yes" ]]
}

# A stack whose first create failed stays in ROLLBACK_COMPLETE, which CloudFormation can only
# delete: after confirmation it is deleted here so that deploy_stack creates it again.
recreate_if_rolled_back() {
  local stack="$1"
  [[ "$(stack_status "${stack}")" == "ROLLBACK_COMPLETE" ]] || return 0
  err "stack ${stack} is in ROLLBACK_COMPLETE: its first create failed (see its events in the CloudFormation console) and it can only be deleted and created again"
  confirm "Delete ${stack} (it holds no resources) and create it again?" \
    || die "not confirmed; ${stack} left as it is (re-run with --yes, or delete it yourself)"
  log "Deleting ${stack} (ROLLBACK_COMPLETE)"
  forget_outputs "${stack}"
  awsr cloudformation delete-stack --stack-name "${stack}"
  awsr cloudformation wait stack-delete-complete --stack-name "${stack}"
}

# Creates or updates one layer's stack; "no changes" is success.
deploy_stack() {
  local layer="$1"
  shift
  recreate_if_rolled_back "$(stack_name "${layer}")"
  local -a args=(cloudformation deploy
    --stack-name "$(stack_name "${layer}")"
    --template-file "${TEMPLATE_DIR}/${layer}.yaml"
    --capabilities CAPABILITY_NAMED_IAM
    --no-fail-on-empty-changeset
    --tags "project=windows-batch-compute")
  if [[ $# -gt 0 ]]; then
    args+=(--parameter-overrides "$@")
  fi
  log "Stack $(stack_name "${layer}")"
  forget_outputs "$(stack_name "${layer}")"
  awsr "${args[@]}" || return
  load_outputs "$(stack_name "${layer}")"
}

# Reads one instance type's vCPUs, nominal memory and architectures into `vcpus`, `memory_mib`
# and `architectures`; fails for a type EC2 does not offer in the region.
read_instance_type() {
  local type="$1"
  # shellcheck disable=SC2016 # the backticks are a JMESPath literal, not a shell expansion
  read -r vcpus memory_mib architectures < <(awsr ec2 describe-instance-types --instance-types "${type}" \
    --query 'InstanceTypes[0].[VCpuInfo.DefaultVCpus, MemoryInfo.SizeInMiB, join(`,`, ProcessorInfo.SupportedArchitectures)]' \
    --output text 2>/dev/null) \
    && [[ "${vcpus}" =~ ^[0-9]+$ && "${memory_mib}" =~ ^[0-9]+$ ]]
}

# Tasks that fit on every type of the list: per type min(vCPUs * 1024 / task CPU, registered
# memory / task memory), where the agent registers what Windows reports
# (REPORTED_MEMORY_PERCENT of nominal) minus ECS_RESERVED_MEMORY; then the minimum over the
# types, since the group may launch any of them. Sets slots_per_instance (when not given),
# first_vcpus and slots_detail; on a type that cannot be used sets slots_problem, returns 1.
compute_slots_per_instance() {
  local -a types
  local type vcpus memory_mib architectures registered_mib by_cpu by_memory slots minimum=""
  IFS=',' read -r -a types <<<"${instance_types}"
  first_vcpus=""
  slots_detail=""
  for type in "${types[@]}"; do
    if ! read_instance_type "${type}"; then
      slots_problem="unknown instance type ${type}: EC2 does not offer it in ${region} (describe-instance-types)"
      return 1
    fi
    if [[ ",${architectures}," != *",x86_64,"* ]]; then
      slots_problem="${type} is ${architectures}, not x86_64: the Windows Server 2022 ECS-optimized AMI runs on x86_64 only"
      return 1
    fi
    first_vcpus="${first_vcpus:-${vcpus}}"
    if ((vcpus != first_vcpus)); then
      slots_problem="instance types must be of one size: ${type} has ${vcpus} vCPUs, ${types[0]} ${first_vcpus}"
      return 1
    fi
    registered_mib=$((memory_mib * REPORTED_MEMORY_PERCENT / 100 - reserved_memory_mib))
    by_cpu=$((vcpus * 1024 / task_cpu))
    by_memory=$((registered_mib / task_memory_mib))
    slots=$((by_cpu < by_memory ? by_cpu : by_memory))
    if ((slots < 1)); then
      slots_problem="a task (${task_cpu} CPU units, ${task_memory_mib} MiB) does not fit on ${type} (${vcpus} vCPUs, about ${registered_mib} MiB registered)"
      return 1
    fi
    slots_detail+="${slots_detail:+, }${type} ${slots}"
    if [[ -z "${minimum}" ]] || ((slots < minimum)); then
      minimum="${slots}"
    fi
  done
  slots_per_instance="${slots_per_instance:-${minimum}}"
  slots_detail+=" tasks per instance -> ${slots_per_instance} for every type"
}

# Uploads a file only when its content differs from the object's (MD5 = ETag for SSE-S3 single
# part uploads), so the object version, and with it MWAA, stays the same on a re-run.
upload_if_changed() {
  local file="$1" bucket="$2" key="$3" local_md5 remote_etag
  local_md5="$(md5sum "${file}" | cut -d' ' -f1)"
  remote_etag="$(awsr s3api head-object --bucket "${bucket}" --key "${key}" \
    --query ETag --output text 2>/dev/null || true)"
  if [[ "${remote_etag//\"/}" == "${local_md5}" ]]; then
    echo "unchanged: s3://${bucket}/${key}"
  else
    awsr s3 cp --only-show-errors "${file}" "s3://${bucket}/${key}"
    echo "uploaded: s3://${bucket}/${key}"
  fi
}

object_version() {
  local bucket="$1" key="$2" version
  version="$(awsr s3api head-object --bucket "${bucket}" --key "${key}" --query VersionId --output text)"
  [[ -n "${version}" && "${version}" != "None" && "${version}" != "null" ]] \
    || die "s3://${bucket}/${key} has no version ID; the MWAA bucket must be versioned"
  echo "${version}"
}

upload_code() {
  local bucket="$1"
  log "Uploading dags/ and requirements-mwaa.txt to s3://${bucket}"
  [[ -d "${DAGS_DIR}" ]] || die "no dags/ directory at ${DAGS_DIR}"
  awsr s3 sync --only-show-errors --delete \
    --exclude '*__pycache__/*' --exclude '*.pyc' \
    "${DAGS_DIR}" "s3://${bucket}/dags"
  upload_if_changed "${REQUIREMENTS_FILE}" "${bucket}" "${REQUIREMENTS_KEY}"
}

# Zips plugins/ flat (MWAA unpacks plugins.zip into /usr/local/airflow/plugins) with fixed
# timestamps and order: the same sources give the same bytes, so the version stays on a re-run.
build_plugins_zip() {
  local archive="$1"
  python3 - "${PLUGINS_DIR}" "${archive}" <<'PY'
import pathlib, sys, zipfile

root, archive = pathlib.Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(archive, "w") as zf:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if "__pycache__/" in name or name.endswith(".pyc"):
            continue
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, path.read_bytes())
PY
}

# Builds and uploads plugins.zip; without a plugins/ folder the environment has no plugins.
upload_plugins() {
  local bucket="$1" archive
  if [[ ! -d "${PLUGINS_DIR}" ]]; then
    log "No plugins/ directory: the Results view is not deployed"
    return 0
  fi
  archive="$(mktemp)"
  build_plugins_zip "${archive}"
  upload_if_changed "${archive}" "${bucket}" "${PLUGINS_KEY}"
  rm -f "${archive}"
}

# A tag derived from docker/'s content: the same sources give the same tag and no rebuild.
source_tag() {
  (
    cd "${DOCKER_DIR}"
    find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-16 | sed 's/^/src-/'
}

image_exists() {
  local repository="$1" tag="$2"
  awsr ecr describe-images --repository-name "${repository}" --image-ids "imageTag=${tag}" \
    >/dev/null 2>&1
}

# The tail of every output stream (stdout, stderr) the build command left in CloudWatch Logs.
print_build_log_tail() {
  local group="$1" command_id="$2" stream
  local -a streams
  mapfile -t streams < <(awsr logs describe-log-streams --log-group-name "${group}" \
    --log-stream-name-prefix "${command_id}/" --query 'logStreams[].logStreamName' \
    --output text 2>/dev/null | tr '\t' '\n' | grep -v '^None$' || true)
  if [[ "${#streams[@]}" -eq 0 ]]; then
    err "the build left no output in log group ${group}"
    return 0
  fi
  for stream in "${streams[@]}"; do
    err "last lines of ${group} ${stream}:"
    awsr logs get-log-events --log-group-name "${group}" --log-stream-name "${stream}" \
      --limit 40 --no-start-from-head --query 'events[].message' --output text >&2 || true
  done
}

builder_instance=""

terminate_builder() {
  if [[ -n "${builder_instance}" ]]; then
    awsr ec2 terminate-instances --instance-ids "${builder_instance}" >/dev/null 2>&1 || true
    echo "build host ${builder_instance} terminated" >&2
    builder_instance=""
  fi
}

# Build hosts a previous, interrupted run left behind (they also end themselves after the timeout).
terminate_leftover_builders() {
  local name="$1" instance
  for instance in $(awsr ec2 describe-instances \
    --filters "Name=tag:Name,Values=${name}" "Name=instance-state-name,Values=pending,running" \
    --query 'Reservations[].Instances[].InstanceId' --output text); do
    [[ "${instance}" != "None" ]] || continue
    echo "terminating build host ${instance} left by an earlier run" >&2
    awsr ec2 terminate-instances --instance-ids "${instance}" >/dev/null
  done
}

# SSM document parameters as JSON from NAME=VALUE arguments (the values carry no quotes or
# backslashes: the document's allowedPatterns exclude them).
document_parameters() {
  local pair json=""
  for pair in "$@"; do
    json+="${json:+,}\"${pair%%=*}\":[\"${pair#*=}\"]"
  done
  echo "{${json}}"
}

# Sends the build document to the instance, retrying while its SSM agent has not registered yet.
send_build_command() {
  local document="$1" instance="$2" group="$3" timeout_s="$4"
  shift 4
  local deadline=$((SECONDS + BUILDER_REGISTER_TIMEOUT_SECONDS)) output errors
  errors="$(mktemp)"
  while true; do
    if output="$(awsr ssm send-command --document-name "${document}" --instance-ids "${instance}" \
      --parameters "$(document_parameters "$@" "TimeoutSeconds=${timeout_s}")" \
      --cloud-watch-output-config "CloudWatchOutputEnabled=true,CloudWatchLogGroupName=${group}" \
      --query Command.CommandId --output text 2>"${errors}")"; then
      rm -f "${errors}"
      echo "${output}"
      return 0
    fi
    grep -q InvalidInstanceId "${errors}" || die "cannot start the build: $(cat "${errors}")"
    ((SECONDS < deadline)) \
      || die "build host ${instance} did not register with SSM within ${BUILDER_REGISTER_TIMEOUT_SECONDS} s"
    echo "waiting for build host ${instance} to boot and register with SSM" >&2
    sleep "${BUILD_POLL_SECONDS}"
  done
}

# Builds docker/ on a short-lived Windows Server 2022 instance unless the image of these sources
# already exists; prints the tag (the only line on stdout; progress goes to stderr).
build_image_on_windows_host() {
  local mwaa_bucket="$1" subnet="$2" image_stack repository repository_uri template document
  local group timeout_min tag archive version command_id status
  image_stack="$(stack_name image)"
  repository="$(stack_output "${image_stack}" RepositoryName)"
  repository_uri="$(stack_output "${image_stack}" RepositoryUri)"
  tag="$(source_tag)"
  if image_exists "${repository}" "${tag}"; then
    log "Image ${repository}:${tag} already built from these sources" >&2
    echo "${tag}"
    return 0
  fi
  template="$(stack_output "${image_stack}" BuilderLaunchTemplateId)"
  document="$(stack_output "${image_stack}" BuildDocumentName)"
  group="$(stack_output "${image_stack}" BuildLogGroupName)"
  timeout_min="$(stack_output "${image_stack}" BuildTimeoutInMinutes)"
  log "Building ${repository}:${tag} on a Windows Server 2022 build host" >&2
  archive="$(mktemp -d)/docker-source.zip"
  (cd "${DOCKER_DIR}" && zip -q -r -X "${archive}" . -x '*/__pycache__/*' '*.pyc' '*.egg-info/*')
  awsr s3 cp --only-show-errors "${archive}" "s3://${mwaa_bucket}/${SOURCE_KEY}" >&2
  rm -f "${archive}"
  version="$(object_version "${mwaa_bucket}" "${SOURCE_KEY}")"
  terminate_leftover_builders "${image_stack}-builder"
  trap terminate_builder EXIT
  builder_instance="$(awsr ec2 run-instances --launch-template "LaunchTemplateId=${template},Version=\$Latest" \
    --subnet-id "${subnet}" --count 1 --query 'Instances[0].InstanceId' --output text)"
  echo "build host ${builder_instance} launched" >&2
  command_id="$(send_build_command "${document}" "${builder_instance}" "${group}" "$((timeout_min * 60))" \
    "SourceBucket=${mwaa_bucket}" "SourceKey=${SOURCE_KEY}" "SourceVersion=${version}" \
    "ImageUri=${repository_uri}:${tag}")"
  # Run Command stops the script at its own timeout; this deadline only guards against a lost host.
  local deadline=$((SECONDS + timeout_min * 60 + 600))
  while true; do
    # Right after SendCommand the invocation may not exist yet (InvocationDoesNotExist).
    status="$(awsr ssm get-command-invocation --command-id "${command_id}" \
      --instance-id "${builder_instance}" --query Status --output text 2>/dev/null || echo Pending)"
    [[ "${status}" == "Pending" || "${status}" == "InProgress" || "${status}" == "Delayed" ]] || break
    ((SECONDS < deadline)) || { status="TimedOut (deploy.sh gave up waiting)"; break; }
    echo "build ${command_id}: ${status}" >&2
    sleep "${BUILD_POLL_SECONDS}"
  done
  if [[ "${status}" != "Success" ]]; then
    err "image build ${command_id} on ${builder_instance} ended ${status}"
    print_build_log_tail "${group}" "${command_id}"
    exit 1
  fi
  terminate_builder
  image_exists "${repository}" "${tag}" \
    || die "the build reported success but ${repository}:${tag} is not in the repository; see log group ${group}"
  log "Image ${repository}:${tag} built" >&2
  echo "${tag}"
}

# --bake-ami / --no-bake-ami, or else the previous choice: baked while the ami stack exists.
resolve_bake_choice() {
  if [[ -n "${bake_ami}" ]]; then
    baking="${bake_ami}"
  elif [[ "$(stack_status "$(stack_name ami)")" != "NONE" ]]; then
    baking="true"
  fi
  [[ "${baking}" != "true" || -z "${image_uri}" ]] \
    || die "$(stack_name ami) bakes the image stack's image; --image-uri needs --no-bake-ami"
}

# Polls a stack until no operation runs on it; fails unless it ends CREATE/UPDATE_COMPLETE.
wait_for_stack() {
  local stack="$1" status deadline=$((SECONDS + AMI_BAKE_TIMEOUT_SECONDS))
  while true; do
    status="$(stack_status "${stack}")"
    case "${status}" in
      CREATE_COMPLETE | UPDATE_COMPLETE) return 0 ;;
      *_IN_PROGRESS) ;;
      *) die "stack ${stack} ended ${status}; its events say why" ;;
    esac
    ((SECONDS < deadline)) || die "${stack} is still ${status} after ${AMI_BAKE_TIMEOUT_SECONDS} s"
    echo "${stack}: ${status}"
    sleep "${BUILD_POLL_SECONDS}"
  done
}

# Bakes the image of this tag into an AMI unless the ami stack has it already (same tag: no
# change); a new tag replaces the component, recipe and image. Prints nothing on stdout.
deploy_ami_stack() {
  local tag="$1" subnet="$2" security_group="$3" image_stack
  image_stack="$(stack_name image)"
  log "Baked AMI of ${prefix}/bersim:${tag} (a new one takes EC2 Image Builder about an hour)"
  deploy_stack ami \
    "RepositoryUri=$(stack_output "${image_stack}" RepositoryUri)" \
    "RepositoryName=$(stack_output "${image_stack}" RepositoryName)" \
    "ImageTag=${tag}" "SubnetId=${subnet}" "SecurityGroupId=${security_group}" \
    || wait_for_stack "$(stack_name ami)"
}

# A resume after --pause recreates the network stack, so the ami stack's Fast Launch template gets
# a new version (new subnet); the AMI's Fast Launch settings still name the old one, with which
# EC2 could not launch the instances that replenish its snapshots. EnableFastLaunch changes them.
refresh_fast_launch() {
  local ami="$1" template version settings current_template current_version parallel count
  template="$(stack_output "$(stack_name ami)" FastLaunchTemplateId)"
  version="$(awsr ec2 describe-launch-templates --launch-template-ids "${template}" \
    --query 'LaunchTemplates[0].LatestVersionNumber' --output text)"
  settings="$(awsr ec2 describe-fast-launch-images --image-ids "${ami}" --query \
    'FastLaunchImages[0].[LaunchTemplate.LaunchTemplateId, LaunchTemplate.Version, MaxParallelLaunches, SnapshotConfiguration.TargetResourceCount]' \
    --output text)"
  read -r current_template current_version parallel count <<<"${settings}"
  if [[ "${current_template}" == "None" || -z "${current_template}" ]]; then
    err "EC2 Fast Launch is not enabled for ${ami}; instances launch from it the standard way"
    return 0
  fi
  [[ "${current_template}:${current_version}" != "${template}:${version}" ]] || return 0
  awsr ec2 enable-fast-launch --image-id "${ami}" --resource-type snapshot \
    --launch-template "LaunchTemplateId=${template},Version=${version}" \
    --max-parallel-launches "${parallel}" --snapshot-configuration "TargetResourceCount=${count}" \
    >/dev/null
  echo "EC2 Fast Launch for ${ami} now launches with ${template} version ${version}"
}

# --no-bake-ami, once the ECS stack runs the public AMI again.
remove_ami_stack() {
  local stack
  stack="$(stack_name ami)"
  [[ "$(stack_status "${stack}")" != "NONE" ]] || return 0
  remove_baked_amis "${stack}" ""
  log "Deleting ${stack} (--no-bake-ami)"
  forget_outputs "${stack}"
  awsr cloudformation delete-stack --stack-name "${stack}"
  awsr cloudformation wait stack-delete-complete --stack-name "${stack}"
}

# --- Preflight: one line per check; a BLOCKER stops the deploy before anything is created. ---

blockers=0

report() {
  local check="$1" state="$2" detail="$3"
  printf '  %-28s %-8s %s\n' "${check}" "${state}" "${detail}"
  if [[ "${state}" == "BLOCKER" ]]; then
    blockers=$((blockers + 1))
  fi
}

# Regions that offer every service in REQUIRED_SERVICES, from AWS's public region table.
regions_offering_all() {
  local service
  local -a lists=()
  for service in "${REQUIRED_SERVICES[@]}"; do
    lists+=("$(awsr ssm get-parameters-by-path \
      --path "/aws/service/global-infrastructure/services/${service}/regions" \
      --query 'Parameters[].Value' --output text 2>/dev/null | tr '\t' '\n' | sort -u)")
  done
  local common="${lists[0]}" list
  for list in "${lists[@]:1}"; do
    common="$(comm -12 <(echo "${common}") <(echo "${list}"))"
  done
  echo "${common}" | paste -sd' ' -
}

# One GetParameters call (it takes up to 10 names): a region offers a service when AWS's public
# region table has /aws/service/global-infrastructure/services/<service>/regions/<region>.
check_region() {
  local service answer
  local -a names=("${WINDOWS_AMI_PARAMETER}") missing=()
  for service in "${REQUIRED_SERVICES[@]}"; do
    names+=("/aws/service/global-infrastructure/services/${service}/regions/${region}")
  done
  answer="$(awsr ssm get-parameters --names "${names[@]}" --query 'InvalidParameters' --output text)"
  for service in "${REQUIRED_SERVICES[@]}"; do
    [[ "${answer}" != *"/services/${service}/regions/"* ]] || missing+=("${service}")
  done
  if [[ "${#missing[@]}" -eq 0 ]]; then
    report "region ${region}" ok "offers ${REQUIRED_SERVICES[*]}"
  else
    report "region ${region}" BLOCKER "does not offer ${missing[*]}; use one of: $(regions_offering_all)"
  fi
  if [[ "${answer}" != *"${WINDOWS_AMI_PARAMETER}"* ]]; then
    report "Windows Server 2022 ECS AMI" ok "published in ${region} (hosts and the image build host)"
  else
    report "Windows Server 2022 ECS AMI" BLOCKER "not published in ${region} (${WINDOWS_AMI_PARAMETER}); choose another region"
  fi
}

# The instance types of the list, and the tasks per instance that hold for all of them.
check_instance_types() {
  local purchase="${purchase_option}"
  [[ "${purchase}" != "spot" ]] || purchase+=" above ${on_demand_base} on-demand"
  if compute_slots_per_instance; then
    report "instance types" ok "${purchase}: ${slots_detail}"
  else
    report "instance types" BLOCKER "${slots_problem}; choose --instance-types of one x86_64 size"
  fi
}

# EC2 Image Builder, when the AMI is baked (a separate call: GetParameters takes 10 names).
check_image_builder() {
  [[ "${baking}" == "true" ]] || return 0
  local answer
  answer="$(awsr ssm get-parameters \
    --names "/aws/service/global-infrastructure/services/imagebuilder/regions/${region}" \
    --query 'InvalidParameters' --output text)"
  if [[ "${answer}" == *"/services/imagebuilder/"* ]]; then
    report "EC2 Image Builder" BLOCKER "not offered in ${region}; deploy with --no-bake-ami"
  else
    report "EC2 Image Builder" ok "offered in ${region} (bakes the AMI)"
  fi
}

# One EC2 vCPU quota against what the group may run of it: a preflight line.
# $1 name, $2 quota code, $3 vCPUs needed, $4 what needs them, $5 what to lower.
check_one_vcpu_quota() {
  local name="$1" code="$2" needed="$3" what="$4" lower="$5" quota
  quota="$(awsr service-quotas get-service-quota --service-code ec2 \
    --quota-code "${code}" --query Quota.Value --output text 2>/dev/null)" || quota=""
  if [[ ! "${quota}" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    report "${name}" warn "could not read quota ${code} (Service Quotas); ${needed} vCPUs needed"
  elif ((${quota%.*} < needed)); then
    report "${name}" BLOCKER "${quota%.*} vCPUs (${code}) < ${needed} needed (${what}); ${lower} or request an increase of ${code} in Service Quotas"
  else
    report "${name}" ok "${quota%.*} vCPUs (${code}) >= ${needed} needed (${what})"
  fi
}

check_vcpu_quota() {
  local vcpus memory_mib architectures needed builder=0 instance_type on_demand_instances spot_instances=0
  instance_type="${instance_types%%,*}"
  if ! read_instance_type "${instance_type}"; then
    report "vCPU quota" BLOCKER "${instance_type} is not offered in ${region}"
    return 0
  fi
  on_demand_instances="${max_instances}"
  if [[ "${purchase_option}" == "spot" ]]; then
    on_demand_instances=$((on_demand_base < max_instances ? on_demand_base : max_instances))
    spot_instances=$((max_instances - on_demand_instances))
  fi
  [[ "${build_image}" == "true" ]] && builder="${vcpus}"
  needed=$((on_demand_instances * vcpus + builder))
  if [[ ! "${instance_type}" =~ ^[acdhimrtz] ]]; then
    report "vCPU quota" warn "${instance_type} is not a Standard family; check its vCPU quotas yourself (${needed} On-Demand, $((spot_instances * vcpus)) Spot)"
    return 0
  fi
  check_one_vcpu_quota "vCPU quota" "${STANDARD_VCPU_QUOTA_CODE}" "${needed}" \
    "${on_demand_instances} x ${instance_type} On-Demand" "lower --max-instances or --on-demand-base"
  if ((spot_instances > 0)); then
    # Spot launches beyond it fail (MaxSpotInstanceCountExceeded) and the group does not
    # launch On-Demand instead: scale_out would wait for instances that never come.
    check_one_vcpu_quota "Spot vCPU quota" "${SPOT_VCPU_QUOTA_CODE}" "$((spot_instances * vcpus))" \
      "${spot_instances} x ${instance_type} Spot" "lower --max-instances, raise --on-demand-base"
  fi
}

check_stacks() {
  local layer stack status listed
  listed="$(awsr cloudformation describe-stacks \
    --query "Stacks[?starts_with(StackName, '${prefix}-')].[StackName, StackStatus]" --output text)"
  for layer in storage network image ami ecs mwaa; do
    stack="$(stack_name "${layer}")"
    status="$(awk -v name="${stack}" '$1 == name { print $2 }' <<<"${listed}")"
    status="${status:-NONE}"
    case "${status}" in
      NONE) report "stack ${stack}" ok "not created yet" ;;
      ROLLBACK_COMPLETE)
        report "stack ${stack}" warn "ROLLBACK_COMPLETE: deploy deletes and recreates it (asks first; --yes)" ;;
      *_IN_PROGRESS) report "stack ${stack}" BLOCKER "${status}: wait until it finishes" ;;
      *_FAILED) report "stack ${stack}" BLOCKER "${status}: see its events; fix or delete it" ;;
      *) report "stack ${stack}" ok "${status}" ;;
    esac
  done
}

check_image() {
  local repository tag
  if [[ -n "${image_uri}" ]]; then
    report "image" ok "--image-uri ${image_uri}"
    return 0
  fi
  repository="${prefix}/bersim"
  tag="$(source_tag)"
  if image_exists "${repository}" "${tag}"; then
    report "image" ok "${repository}:${tag} (built from the current docker/)"
  elif [[ "${build_image}" == "true" ]]; then
    report "image" ok "${repository}:${tag} will be built (--build-image)"
  elif skipped ecs; then
    report "image" ok "ECS stack skipped"
  else
    report "image" BLOCKER "no image ${repository}:${tag} built from the current docker/; add --build-image (builds it on AWS) or --image-uri URI"
  fi
}

# Whether the instances launch from a baked AMI, and whether this run bakes one.
check_baked_ami() {
  local stack baked_uri tag
  stack="$(stack_name ami)"
  if [[ "${baking}" != "true" ]]; then
    if [[ "${bake_ami}" == "false" && "$(stack_status "${stack}")" != "NONE" ]]; then
      report "baked AMI" ok "--no-bake-ami: back to the public AMI; ${stack}, its AMIs and snapshots will be removed"
    else
      report "baked AMI" ok "not used: instances boot the public ECS-optimized AMI (--bake-ami bakes one)"
    fi
    return 0
  fi
  tag="$(source_tag)"
  baked_uri="$(awsr cloudformation describe-stacks --stack-name "${stack}" \
    --query "Stacks[0].Outputs[?OutputKey=='BakedImageUri'].OutputValue | [0]" \
    --output text 2>/dev/null || true)"
  if [[ "${baked_uri}" == *":${tag}" ]]; then
    report "baked AMI" ok "$(stack_output "${stack}" BakedAmiId) has ${prefix}/bersim:${tag} (EC2 Fast Launch)"
  else
    report "baked AMI" ok "${prefix}/bersim:${tag} will be baked by EC2 Image Builder, then EC2 Fast Launch (about an hour)"
  fi
}

preflight() {
  log "Preflight (changes nothing)"
  report "credentials" ok "${caller_arn} (account $(awsr sts get-caller-identity --query Account --output text))"
  check_region
  check_instance_types
  check_image_builder
  check_vcpu_quota
  check_stacks
  check_image
  check_baked_ami
  if ((blockers > 0)); then
    err "preflight: ${blockers} blocker(s) above; nothing was changed"
    return 1
  fi
  echo "preflight: ok"
}

print_next_steps() {
  local environment="$1" url
  url="$(awsr mwaa get-environment --name "${environment}" \
    --query Environment.WebserverUrl --output text)"
  cat <<EOF

Airflow UI: https://${url}
To run a study: open the UI, unpause ${DAG_ID} and use "Trigger DAG w/ config".
From the command line (AWS CLI v2):
  aws mwaa invoke-rest-api --region ${region} --name ${environment} --method PATCH \\
    --path /dags/${DAG_ID} --body '{"is_paused": false}'
  aws mwaa invoke-rest-api --region ${region} --name ${environment} --method POST \\
    --path /dags/${DAG_ID}/dagRuns --body '{"logical_date": null, "conf": {"num_tasks": 20}}'
EOF
}

main() {
  parse_args "$@"
  validate_args
  check_prerequisites
  resolve_capacity
  resolve_bake_choice
  if [[ "${check_only}" == "true" ]]; then
    preflight
    return
  fi
  preflight || exit 1

  local storage network image ecs mwaa
  storage="$(stack_name storage)"
  network="$(stack_name network)"
  image="$(stack_name image)"
  ecs="$(stack_name ecs)"
  mwaa="$(stack_name mwaa)"

  skipped storage || deploy_stack storage
  local mwaa_bucket results_bucket
  mwaa_bucket="$(stack_output "${storage}" MwaaBucketName)"
  results_bucket="$(stack_output "${storage}" ResultsBucketName)"

  skipped network || deploy_stack network \
    "NatGatewayCount=${nat_gateways}" "RdpCidr=${rdp_cidr}"
  local subnets instance_sg mwaa_sg
  subnets="$(stack_output "${network}" PrivateSubnetIds)"
  instance_sg="$(stack_output "${network}" EcsInstanceSecurityGroupId)"
  mwaa_sg="$(stack_output "${network}" MwaaSecurityGroupId)"

  skipped image || deploy_stack image \
    "RepositoryName=${prefix}/bersim" "SourceBucketName=${mwaa_bucket}" "SourceObjectKey=${SOURCE_KEY}" \
    "BuilderSecurityGroupId=${instance_sg}"

  if ! skipped ecs; then
    # Never point the task definition at an image that does not exist (preflight refused that).
    local -a image_args=()
    local tag
    if [[ -n "${image_uri}" ]]; then
      image_args=("ImageUri=${image_uri}")
    elif [[ "${build_image}" == "true" ]]; then
      tag="$(build_image_on_windows_host "${mwaa_bucket}" "${subnets%%,*}")"
      image_args=("ImageTag=${tag}" "ImageUri=")
    else
      tag="$(source_tag)"
      image_exists "${prefix}/bersim" "${tag}" \
        || die "no image ${prefix}/bersim:${tag}; add --build-image or --image-uri URI"
      image_args=("ImageTag=${tag}" "ImageUri=")
    fi
    local baked_ami=""
    if [[ "${baking}" == "true" ]]; then
      skipped ami || deploy_ami_stack "${tag}" "${subnets%%,*}" "${instance_sg}"
      baked_ami="$(stack_output "$(stack_name ami)" BakedAmiId)"
      refresh_fast_launch "${baked_ami}"
    fi
    compute_slots_per_instance || die "${slots_problem}"
    log "${slots_detail}"
    local -a type_args
    mapfile -t type_args < <(instance_type_parameters)
    deploy_stack ecs \
      "${type_args[@]}" "PurchaseOption=${purchase_option}" \
      "OnDemandBaseCapacity=${on_demand_base}" "MaxInstances=${max_instances}" \
      "TaskCpu=${task_cpu}" "TaskMemoryInMiB=${task_memory_mib}" \
      "ReservedMemoryInMiB=${reserved_memory_mib}" "SlotsPerInstance=${slots_per_instance}" \
      "PrivateSubnetIds=${subnets}" "InstanceSecurityGroupId=${instance_sg}" \
      "ResultsBucketName=${results_bucket}" \
      "RepositoryUri=$(stack_output "${image}" RepositoryUri)" \
      "BakedAmiId=${baked_ami}" "${image_args[@]}"
    if [[ "${baking}" == "true" ]]; then
      # AMIs of earlier tags: no launch template uses them any more.
      remove_baked_amis "$(stack_name ami)" "${baked_ami}"
    elif [[ "${bake_ami}" == "false" ]]; then
      remove_ami_stack
    fi
  fi

  skipped upload || upload_code "${mwaa_bucket}"
  skipped upload || upload_plugins "${mwaa_bucket}"
  local requirements_version plugins_args=()
  requirements_version="$(object_version "${mwaa_bucket}" "${REQUIREMENTS_KEY}")"
  echo "requirements version: ${requirements_version}"
  if [[ -d "${PLUGINS_DIR}" ]]; then
    plugins_args=("PluginsS3Path=${PLUGINS_KEY}"
      "PluginsS3ObjectVersion=$(object_version "${mwaa_bucket}" "${PLUGINS_KEY}")")
    echo "plugins version: ${plugins_args[1]#*=}"
  fi

  if skipped mwaa; then
    log "MWAA skipped (--skip mwaa); nothing else to do"
    return 0
  fi
  local boot_s="${PUBLIC_AMI_BOOT_SECONDS}" pull_s="${PUBLIC_AMI_PULL_SECONDS}"
  if [[ "${baking}" == "true" ]]; then
    boot_s="${BAKED_AMI_BOOT_SECONDS}"
    pull_s="${BAKED_AMI_PULL_SECONDS}"
  fi
  deploy_stack mwaa \
    "InstanceBootSeconds=${boot_s}" "ImagePullSeconds=${pull_s}" \
    "EnvironmentClass=${environment_class}" "WebserverAccessMode=${webserver_access}" \
    "MwaaBucketName=${mwaa_bucket}" "RequirementsS3Path=${REQUIREMENTS_KEY}" \
    "RequirementsS3ObjectVersion=${requirements_version}" \
    "PrivateSubnetIds=${subnets}" "SecurityGroupId=${mwaa_sg}" \
    "ResultsBucketName=${results_bucket}" \
    "ClusterName=$(stack_output "${ecs}" ClusterName)" \
    "AutoScalingGroupName=$(stack_output "${ecs}" AutoScalingGroupName)" \
    "TaskDefinitionFamily=$(stack_output "${ecs}" TaskDefinitionFamily)" \
    "ContainerName=$(stack_output "${ecs}" ContainerName)" \
    "LogGroupName=$(stack_output "${ecs}" LogGroupName)" \
    "LogStreamPrefix=$(stack_output "${ecs}" LogStreamPrefix)" \
    "SlotsPerInstance=$(stack_output "${ecs}" SlotsPerInstance)" \
    "TaskCpu=$(stack_output "${ecs}" TaskCpu)" \
    "TaskMemoryInMiB=$(stack_output "${ecs}" TaskMemoryInMiB)" \
    "ReservedMemoryInMiB=$(stack_output "${ecs}" ReservedMemoryInMiB)" \
    "InstanceTypes=$(stack_output "${ecs}" InstanceTypes)" \
    "PurchaseOption=$(stack_output "${ecs}" PurchaseOption)" \
    "OnDemandBaseCapacity=$(stack_output "${ecs}" OnDemandBaseCapacity)" \
    "MaxClusterSize=${max_instances}" \
    "TaskRoleArn=$(stack_output "${ecs}" TaskRoleArn)" \
    "TaskExecutionRoleArn=$(stack_output "${ecs}" TaskExecutionRoleArn)" \
    "${plugins_args[@]}"
  print_next_steps "$(stack_output "${mwaa}" EnvironmentName)"
}

main "$@"
