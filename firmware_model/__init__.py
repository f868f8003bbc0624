"""firmware_model: the NetDAM device, sans-I/O (SPEC §4, §7, §8 and SPEC_device).

Owns everything inside one emulated device: its memory and registered regions
(``memory``), the instruction table with one row per opcode (``instructions``), the
responder that turns a datagram and ``now`` into datagrams to send (``device``), the
per-peer replay window and ordering state (``replay``), the reduce/FP8 ALU kernels
(``alu``), the cost model (``timing``) and the counters (``counters``). No sockets, clocks
or sleeps: the device process, the shared-memory path and the simulator are glue around
``Device``.

    dev = Device(device_id=1, mem_size=1 << 20)
    region = dev.register_region(0, 4096, Rights.ALL)
    outs = dev.receive(datagram, now)      # -> [Out(dest, packet), ...]
"""

from firmware_model import alu
from firmware_model.counters import Counters
from firmware_model.device import Device
from firmware_model.instructions import (Context, Instruction, InstructionError,
                                         InstructionTable, Out)
from firmware_model.memory import Access, Memory, Region, Rights
from firmware_model.replay import MessageTracker, PeerTable, ReplayWindow, Verdict
from firmware_model.timing import ETH_100G, ETH_200G, ETH_400G, PRESETS, TimingModel

__all__ = ["alu", "Device", "Out", "Rights", "Region", "Access", "Memory", "TimingModel",
           "ETH_100G", "ETH_200G", "ETH_400G", "PRESETS", "Context", "Instruction",
           "InstructionError", "InstructionTable", "Counters", "ReplayWindow", "PeerTable",
           "MessageTracker", "Verdict"]
