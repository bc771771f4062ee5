"""handover.calibration"""
