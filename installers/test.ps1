# Set up (first run) and run the tests on Windows. Not tested on these Linux machines.
$ErrorActionPreference = "Stop"
$Root = Split-Path -Parent $PSScriptRoot
& "$PSScriptRoot\setup.ps1"
$env:QT_QPA_PLATFORM = "offscreen"
& "$Root\.venv\Scripts\python.exe" -m pytest @args
