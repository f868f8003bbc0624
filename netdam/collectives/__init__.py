"""netdam.collectives: allreduce and friends, host-driven and in the devices.

``algorithms`` holds the host-driven algorithms as sans-I/O generators over the
vocabulary of ``schedule``; the communicator runs them over NetDAM devices.
"""
