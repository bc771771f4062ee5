"""handover.sim_twin"""
