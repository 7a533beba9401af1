# Set up (first run) and start the talkcam window on Windows. Not tested on these Linux machines.
$ErrorActionPreference = "Stop"
$Root = Split-Path -Parent $PSScriptRoot
& "$PSScriptRoot\setup.ps1"
& "$Root\.venv\Scripts\talkcam.exe" live @args
