# Entrypoint of the engine's Windows base image (every study's image starts FROM it).
#
# 1. Adds the route a Windows container on ECS needs, in the default (NAT) network mode, to reach
#    the task credential endpoint (169.254.170.2): without it boto3 finds no credentials for the
#    task IAM role. This is the credentials half of AWS's "IAM roles for task container bootstrap
#    script" (Amazon ECS Developer Guide, Windows IAM roles for tasks), made idempotent and
#    non-fatal so the image also runs outside ECS. Set WB_SKIP_ECS_ROUTES=1 to skip it.
#    No route to the instance metadata service (169.254.169.254): through it a container could
#    read the instance role's credentials, which can do far more than the task role, and the tasks
#    need nothing from it (the task definition gives the region as AWS_REGION).
# 2. Runs the task runner, `python -m wbrun`, with the container's arguments (ECS: the command
#    override) and exits with its exit code: 0, the failing item's own code, 64/65 (bad
#    manifest), 74 (storage), 124 (an item's timeout).
#
# New-NetRoute needs administrator rights: the image runs as ContainerAdministrator (the default).

$ErrorActionPreference = 'Stop'

function Add-EcsTaskRoutes {
    $defaultRoute = Get-NetRoute -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue |
        Sort-Object -Property RouteMetric | Select-Object -First 1
    $adapter = Get-NetAdapter -InterfaceDescription 'Hyper-V Virtual Ethernet*' -ErrorAction SilentlyContinue |
        Sort-Object -Property ifIndex | Select-Object -First 1
    if (-not $defaultRoute -or -not $adapter) {
        Write-Warning 'wbrun: no default gateway or Hyper-V adapter found; ECS task credentials route not added'
        return
    }
    $gateway = $defaultRoute.NextHop
    $ifIndex = $adapter.ifIndex
    # The task credentials endpoint only; see the header for why not the metadata service.
    $prefix = '169.254.170.2/32'
    if (Get-NetRoute -DestinationPrefix $prefix -ErrorAction SilentlyContinue) {
        return
    }
    New-NetRoute -DestinationPrefix $prefix -InterfaceIndex $ifIndex -NextHop $gateway `
        -PolicyStore ActiveStore | Out-Null
}

if ($env:WB_SKIP_ECS_ROUTES -ne '1') {
    try {
        Add-EcsTaskRoutes
    }
    catch {
        # Not fatal: outside ECS the routes are not needed; on ECS a missing route shows up as
        # "no AWS credentials found" from the runner, with exit code 74.
        Write-Warning ('wbrun: could not add the ECS task routes: {0}' -f $_.Exception.Message)
    }
}

if ($args.Count -eq 0) {
    $runnerArgs = @('--help')
}
else {
    $runnerArgs = $args
}
& python -m wbrun @runnerArgs
exit $LASTEXITCODE
