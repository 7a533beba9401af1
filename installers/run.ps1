# Set up (first run) and render the demo video on Windows. Not tested on these Linux machines.
$ErrorActionPreference = "Stop"
$Root = Split-Path -Parent $PSScriptRoot
& "$PSScriptRoot\setup.ps1"
$Out = "$Root\out\talkcam_hello.mp4"
& "$Root\.venv\Scripts\talkcam.exe" say (Get-Content "$Root\assets\samples\hello.txt" -Raw) --out $Out
Write-Host "[run] video written to: $Out"
