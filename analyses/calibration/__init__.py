"""Answer-span confidence, expected calibration error and reliability per model and condition: `run(CalibrationConfig)`."""

from analyses.calibration.analysis import (
    Calibration,
    CalibrationConfig,
    CalibrationResult,
    ModelCalibration,
    run,
    run_cached,
)

__all__ = ["Calibration", "CalibrationConfig", "CalibrationResult", "ModelCalibration", "run", "run_cached"]
