"""handover.drivers"""
