#!/usr/bin/env bash
#
# Deploys windows-batch-compute to AWS with the AWS CLI: the storage, network, image, ECS and
# MWAA CloudFormation stacks (in that order, each fed the outputs of the ones before), the DAGs,
# the MWAA requirements file and plugins.zip (the Results view). Optionally builds the Windows workload image with CodeBuild.
# Safe to re-run: unchanged stacks and files are left as they are and it exits 0.

set -euo pipefail

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
readonly LAYERS=(storage network image ecs upload mwaa)
# Seconds between two looks at a running image build (tests shorten it).
readonly BUILD_POLL_SECONDS="${DEPLOY_BUILD_POLL_SECONDS:-20}"

region=""
prefix="windows-batch"
instance_type="c5.xlarge"
max_instances="10"
task_cpu="1024"
task_memory_mib="1536"
reserved_memory_mib="2048"
slots_per_instance=""
image_uri=""
build_image="false"
webserver_access="PUBLIC_ONLY"
environment_class="mw1.small"
nat_gateways="1"
rdp_cidr=""
skip_layers=()

usage() {
  cat <<EOF
Usage: ./deploy.sh [options]

Deploys (or updates) windows-batch-compute in one AWS region: stacks <prefix>-storage,
<prefix>-network, <prefix>-image, <prefix>-ecs and <prefix>-mwaa, then uploads dags/,
requirements-mwaa.txt and plugins.zip (plugins/, the Results view) to the MWAA bucket.
Re-running with nothing changed changes nothing.
Options not given take their defaults on every run.

Options:
  --region REGION          AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the CLI profile's)
  --prefix PREFIX          stack-name prefix, lowercase (default: ${prefix})
  --instance-type TYPE     ECS container instance type (default: ${instance_type})
  --max-instances N        upper bound of the Auto Scaling group (default: ${max_instances})
  --task-cpu UNITS         CPU units per task, 1024 = 1 vCPU (default: ${task_cpu})
  --task-memory MIB        memory per task in MiB (default: ${task_memory_mib})
  --slots-per-instance N   tasks per instance (default: computed from the instance type)
  --image-uri URI          run this container image instead of the image stack's repository
  --build-image            build docker/ on a Windows CodeBuild runner and run that image
  --webserver-access MODE  PUBLIC_ONLY (default; AWS sign-in) or PRIVATE_ONLY (VPC only)
  --environment-class C    MWAA size (default: ${environment_class})
  --nat-gateways 1|2       1 shared NAT gateway (default, cheaper) or one per AZ
  --rdp-cidr CIDR          allow RDP to the instances from CIDR (default: no inbound access)
  --skip LAYER[,LAYER]     leave these steps out; later steps read the outputs of the existing
                           stacks. Steps: ${LAYERS[*]}
  -h, --help               show this help

Needs the AWS CLI (v2; v1 works too) with credentials; --build-image also needs zip.
EOF
}

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --region) region="${2:?--region needs a value}"; shift 2 ;;
      --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
      --instance-type) instance_type="${2:?--instance-type needs a value}"; shift 2 ;;
      --max-instances) max_instances="${2:?--max-instances needs a value}"; shift 2 ;;
      --task-cpu) task_cpu="${2:?--task-cpu needs a value}"; shift 2 ;;
      --task-memory) task_memory_mib="${2:?--task-memory needs a value}"; shift 2 ;;
      --slots-per-instance) slots_per_instance="${2:?--slots-per-instance needs a value}"; shift 2 ;;
      --image-uri) image_uri="${2:?--image-uri needs a value}"; shift 2 ;;
      --build-image) build_image="true"; shift ;;
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
  [[ "${webserver_access}" == "PUBLIC_ONLY" || "${webserver_access}" == "PRIVATE_ONLY" ]] \
    || die "--webserver-access must be PUBLIC_ONLY or PRIVATE_ONLY"
  [[ "${nat_gateways}" == "1" || "${nat_gateways}" == "2" ]] || die "--nat-gateways must be 1 or 2"
  [[ "${build_image}" == "false" || -z "${image_uri}" ]] \
    || die "--build-image and --image-uri exclude each other"
  local layer
  for layer in "${skip_layers[@]}"; do
    [[ " ${LAYERS[*]} " == *" ${layer} "* ]] || die "unknown step for --skip: ${layer} (steps: ${LAYERS[*]})"
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
stack_output() {
  local stack="$1" key="$2" value
  value="$(awsr cloudformation describe-stacks --stack-name "${stack}" \
    --query "Stacks[0].Outputs[?OutputKey=='${key}'].OutputValue | [0]" --output text)" \
    || die "cannot read stack ${stack}; deploy it first (without --skip)"
  [[ -n "${value}" && "${value}" != "None" ]] || die "stack ${stack} has no output ${key}"
  echo "${value}"
}

# Creates or updates one layer's stack; "no changes" is success.
deploy_stack() {
  local layer="$1"
  shift
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
  awsr "${args[@]}"
}

# Tasks that fit on one instance: min(vCPUs * 1024 / task CPU, (memory - reserved) / task memory).
compute_slots_per_instance() {
  local vcpus memory_mib by_cpu by_memory
  read -r vcpus memory_mib < <(awsr ec2 describe-instance-types --instance-types "${instance_type}" \
    --query 'InstanceTypes[0].[VCpuInfo.DefaultVCpus, MemoryInfo.SizeInMiB]' --output text) \
    || die "unknown instance type ${instance_type} in ${region}"
  by_cpu=$((vcpus * 1024 / task_cpu))
  by_memory=$(((memory_mib - reserved_memory_mib) / task_memory_mib))
  slots_per_instance=$((by_cpu < by_memory ? by_cpu : by_memory))
  ((slots_per_instance >= 1)) \
    || die "a task (${task_cpu} CPU units, ${task_memory_mib} MiB) does not fit on ${instance_type}"
  log "${instance_type}: ${vcpus} vCPUs, ${memory_mib} MiB -> ${slots_per_instance} tasks per instance"
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

print_build_log_tail() {
  local build_id="$1" group stream
  read -r group stream < <(awsr codebuild batch-get-builds --ids "${build_id}" \
    --query 'builds[0].logs.[groupName, streamName]' --output text)
  if [[ -z "${group}" || "${group}" == "None" ]]; then
    err "the build left no CloudWatch log"
    return 0
  fi
  err "last lines of the build log (${group} ${stream}):"
  awsr logs get-log-events --log-group-name "${group}" --log-stream-name "${stream}" \
    --limit 40 --no-start-from-head --query 'events[].message' --output text >&2 || true
}

# Builds docker/ with the image stack's CodeBuild project unless that tag already exists; prints
# the tag (the only line on stdout; progress goes to stderr).
build_image_with_codebuild() {
  local mwaa_bucket="$1" repository project tag archive version build_id status
  repository="$(stack_output "$(stack_name image)" RepositoryName)"
  project="$(stack_output "$(stack_name image)" BuildProjectName)"
  tag="$(source_tag)"
  if awsr ecr describe-images --repository-name "${repository}" \
    --image-ids "imageTag=${tag}" >/dev/null 2>&1; then
    log "Image ${repository}:${tag} already built from these sources" >&2
    echo "${tag}"
    return 0
  fi
  log "Building ${repository}:${tag} with CodeBuild project ${project}" >&2
  archive="$(mktemp -d)/docker-source.zip"
  (cd "${DOCKER_DIR}" && zip -q -r -X "${archive}" . -x '*/__pycache__/*' '*.pyc' '*.egg-info/*')
  awsr s3 cp --only-show-errors "${archive}" "s3://${mwaa_bucket}/${SOURCE_KEY}" >&2
  rm -f "${archive}"
  version="$(object_version "${mwaa_bucket}" "${SOURCE_KEY}")"
  build_id="$(awsr codebuild start-build --project-name "${project}" --source-version "${version}" \
    --environment-variables-override "name=IMAGE_TAG,value=${tag},type=PLAINTEXT" \
    --query build.id --output text)"
  while true; do
    status="$(awsr codebuild batch-get-builds --ids "${build_id}" \
      --query 'builds[0].buildStatus' --output text)"
    [[ "${status}" == "IN_PROGRESS" ]] || break
    echo "build ${build_id}: ${status}" >&2
    sleep "${BUILD_POLL_SECONDS}"
  done
  if [[ "${status}" != "SUCCEEDED" ]]; then
    err "image build ${build_id} ended ${status}"
    print_build_log_tail "${build_id}"
    exit 1
  fi
  log "Image ${repository}:${tag} built" >&2
  echo "${tag}"
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
    "RepositoryName=${prefix}/bersim" "SourceBucketName=${mwaa_bucket}" "SourceObjectKey=${SOURCE_KEY}"

  if ! skipped ecs; then
    local -a image_args=()
    local tag
    if [[ "${build_image}" == "true" ]]; then
      tag="$(build_image_with_codebuild "${mwaa_bucket}")"
      image_args=("ImageTag=${tag}" "ImageUri=")
    elif [[ -n "${image_uri}" ]]; then
      image_args=("ImageUri=${image_uri}")
    fi
    [[ -n "${slots_per_instance}" ]] || compute_slots_per_instance
    deploy_stack ecs \
      "InstanceType=${instance_type}" "MaxInstances=${max_instances}" \
      "TaskCpu=${task_cpu}" "TaskMemoryInMiB=${task_memory_mib}" \
      "ReservedMemoryInMiB=${reserved_memory_mib}" "SlotsPerInstance=${slots_per_instance}" \
      "PrivateSubnetIds=${subnets}" "InstanceSecurityGroupId=${instance_sg}" \
      "ResultsBucketName=${results_bucket}" \
      "RepositoryUri=$(stack_output "${image}" RepositoryUri)" \
      "${image_args[@]}"
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
  deploy_stack mwaa \
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
    "MaxClusterSize=${max_instances}" \
    "TaskRoleArn=$(stack_output "${ecs}" TaskRoleArn)" \
    "TaskExecutionRoleArn=$(stack_output "${ecs}" TaskExecutionRoleArn)" \
    "${plugins_args[@]}"
  print_next_steps "$(stack_output "${mwaa}" EnvironmentName)"
}

main "$@"
