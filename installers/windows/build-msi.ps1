# Builds target\msi\devnet-<version>-x64.msi on Windows:
#   powershell -ExecutionPolicy Bypass -File installers\windows\build-msi.ps1 [-OutDir DIR]
# Needs Rust (x86_64-pc-windows-msvc), Node.js (the tray app's window) and the
# .NET SDK, from which the WiX v4 command line is installed as a dotnet tool.
#
# Not signed: a release signs devnetd.exe, devnet.exe, devnet-tray.exe and the
# MSI with signtool (SmartScreen warns about unsigned ones).
#
# UNVERIFIED: never run on Windows (tests/installers_other_os.rs checks
# devnet.wxs and the variables this script defines, on Linux).
param(
    [string]$OutDir = "target\msi"
)
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..\..')

function Invoke-Checked {
    # PowerShell does not stop on a native command's exit code by itself.
    $exe, $rest = $args
    & $exe @rest
    if ($LASTEXITCODE -ne 0) { throw "$($args -join ' ') failed with exit code $LASTEXITCODE" }
}

# The workspace's version, which the MSI carries (MajorUpgrade compares it).
$Version = (Select-String -Path Cargo.toml -Pattern '^version = "(.+)"$' | Select-Object -First 1).Matches[0].Groups[1].Value

# WiX v4 and its Util extension (WixQuietExec, ServiceConfig), pinned together.
$WixVersion = '4.0.5'
if (-not (Get-Command wix -ErrorAction SilentlyContinue)) {
    Invoke-Checked dotnet tool install --global wix --version $WixVersion
}
Invoke-Checked wix extension add --global "WixToolset.Util.wixext/$WixVersion"

# The window is embedded in the tray app, so it is built first.
Push-Location ui
try {
    Invoke-Checked npm ci --no-audit --no-fund
    Invoke-Checked npm run build
} finally {
    Pop-Location
}
Invoke-Checked cargo build --release --locked -p devnetd -p devnet-cli -p devnet-tray

New-Item -ItemType Directory -Force -Path $OutDir | Out-Null
Invoke-Checked wix build installers\windows\devnet.wxs `
    -arch x64 `
    -ext WixToolset.Util.wixext `
    -d "Version=$Version" `
    -d "BinDir=target\release" `
    -o (Join-Path $OutDir "devnet-$Version-x64.msi")
Write-Host "built $(Join-Path $OutDir "devnet-$Version-x64.msi")"
