"""Generate the bundled SYNTHETIC demo dataset: a small electronics catalogue plus simulated ratings.

Usage:  python data/make_demo.py [--out DIR] [--seed N]

Deterministic: the same seed and the same numpy version give byte-identical files. Nothing here is
real data; every brand, product, user and review is made up by the simulation below.

Files written into DIR (default: data/demo next to this script):
  items.csv    item_id, title, description, brand, category, subcategory, price (a few empty)
  ratings.csv  user_id, item_id, rating (1-5), timestamp (epoch seconds), review
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20240607
N_USERS = 400
T_START = 1640995200  # 2022-01-01T00:00:00Z
T_SPAN = 730 * 86400  # two years
N_MISSING_PRICES = 6

VIDEO = "Video Cables & Adapters"
AUDIO = "Audio Cables & Accessories"
USB = "USB Cables & Hubs"
POWER = "Chargers & Power"
HEAD = "Headphones"
STORAGE = "Storage"
NET = "Networking"
CATEGORIES = [VIDEO, AUDIO, USB, POWER, HEAD, STORAGE, NET]

# Fictional brands and the categories each one sells in.
BRANDS = {
    "Cablix": [VIDEO, AUDIO, USB, NET],
    "Vextra": [VIDEO, AUDIO, HEAD],
    "Monolux": [VIDEO, USB, POWER],
    "Zentro": [USB, POWER, STORAGE],
    "Kordia": [VIDEO, AUDIO, NET],
    "Aurion": [AUDIO, HEAD],
    "Voltic": [POWER, USB],
    "Nexwire": [NET, USB, VIDEO],
    "Strata": [STORAGE, NET],
    "Brightlane": [HEAD, POWER, STORAGE],
}

CABLE_FEATS = ["Gold-Plated", "Braided", "Double Shielded", "Ferrite Core", "Nylon Braided", "Slim Jacket"]
COLORS = ["Black", "White", "Grey", "Blue"]


@dataclass
class Sub:
    """One fine product type: how many items, price level, title/description templates, option lists."""

    category: str
    name: str
    noun: str  # how reviews name it
    price: float  # median price in USD for a factor-1.0 variant
    n: int
    title: str  # format string; {base} is the subcategory's base name
    desc: str
    options: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # key -> (text, price factor)
    base: str = ""

    def __post_init__(self) -> None:
        self.base = self.base or self.name


def lengths(*feet: float) -> list[tuple[str, float]]:
    return [(f"{f:g} ft", 1.0 + 0.045 * (f - 6)) for f in feet]


def plain(*words: str) -> list[tuple[str, float]]:
    return [(w, 1.0) for w in words]


CABLE = plain(*CABLE_FEATS)

SUBS: list[Sub] = [
    # ---------------------------------------------------------------- video
    Sub(VIDEO, "S-Video Cable", "s-video cable", 8.99, 4,
        "{base} {len}, 4-Pin Mini-DIN Male to Male, {feat}",
        "{len} S-Video cable with 4-pin mini-DIN male connectors on both ends. Carries separate "
        "luminance and chroma signals for a sharper analog picture than composite video. Connects "
        "VCRs, DVD players, camcorders and retro game consoles to TVs and capture cards.",
        {"len": lengths(6, 12, 25, 50), "feat": CABLE}),
    Sub(VIDEO, "S-Video to RCA Adapter", "s-video adapter", 7.49, 4,
        "{kind}",
        "S-Video to RCA video adapter, {kind}. Converts a 4-pin mini-DIN S-Video output to a yellow "
        "RCA composite video input so older camcorders, VCRs and game consoles play on any TV.",
        {"kind": plain("S-Video Male to RCA Female Adapter, 2-Pack",
                       "S-Video to 3RCA Composite Cable 6 ft",
                       "S-Video to RCA Composite Video Cable 12 ft",
                       "S-Video Female to RCA Male Adapter, Gold-Plated")}),
    Sub(VIDEO, "Composite RCA Video Cable", "composite video cable", 7.99, 6,
        "Composite RCA Video Cable {len}, Yellow Male to Male, {feat}",
        "{len} composite video cable with yellow RCA plugs for standard-definition analog video. "
        "Links VCRs, DVD players, satellite boxes and retro consoles to a TV or projector.",
        {"len": lengths(3, 6, 12, 25, 50), "feat": CABLE}),
    Sub(VIDEO, "Component Video Cable", "component video cable", 12.99, 4,
        "Component Video Cable {len}, 3RCA YPbPr Red Green Blue, {feat}",
        "{len} component video cable with red, green and blue RCA plugs (YPbPr) for analog HD video "
        "up to 1080i. Connects DVD players, older game consoles and cable boxes to HDTVs.",
        {"len": lengths(6, 12, 25, 3), "feat": CABLE}),
    Sub(VIDEO, "HDMI Cable", "hdmi cable", 10.99, 10,
        "HDMI Cable {len}, {ver}, {feat}",
        "{len} HDMI cable, {ver}. Carries digital video and audio from streaming boxes, game "
        "consoles, laptops and Blu-ray players to TVs, monitors and projectors. Supports ARC.",
        {"len": lengths(3, 6, 10, 15, 25, 1.5), "ver": plain("High Speed 4K@60Hz", "8K Ultra High Speed 48Gbps",
                                                       "High Speed with Ethernet"), "feat": CABLE}),
    Sub(VIDEO, "DisplayPort Cable", "displayport cable", 13.99, 6,
        "DisplayPort Cable {len}, {ver}, {feat}",
        "{len} DisplayPort cable, {ver}, with latching connectors. Drives high refresh rate gaming "
        "monitors and 4K displays from desktop graphics cards and docks.",
        {"len": lengths(3, 6, 10, 15), "ver": plain("DP 1.4 8K@60Hz 4K@144Hz", "DP 1.2 4K@60Hz"),
         "feat": CABLE}),
    Sub(VIDEO, "VGA Cable", "vga cable", 8.99, 5,
        "VGA Cable {len}, 15-Pin HD15 Male to Male, {feat}",
        "{len} VGA monitor cable with 15-pin HD15 connectors and thumbscrews. Analog video for older "
        "monitors, projectors and KVM switches.",
        {"len": lengths(6, 10, 15, 25, 3), "feat": plain("Ferrite Core", "Double Shielded", "Slim Jacket")}),
    Sub(VIDEO, "DVI Adapter", "dvi adapter", 7.99, 4,
        "{base}, {kind}",
        "DVI video adapter: {kind}. Connects a graphics card or laptop output to a monitor with a "
        "different video port. Digital video, no audio.",
        {"kind": plain("DVI-D to HDMI, Bi-Directional", "DVI-I to VGA Male to Female",
                       "DisplayPort to DVI Male to Female", "DVI-D Dual Link Male to HDMI Female")},
        base="DVI Adapter"),
    Sub(VIDEO, "HDMI to VGA Adapter", "hdmi to vga adapter", 11.99, 4,
        "HDMI to VGA Adapter {kind}",
        "HDMI to VGA video converter, {kind}. Turns a digital HDMI output into analog VGA for older "
        "monitors and projectors; 1080p at 60Hz.",
        {"kind": plain("with 3.5mm Audio Jack", "Male to Female, 1080p", "with Micro-USB Power",
                       "Gold-Plated, 8-inch")}),
    Sub(VIDEO, "HDMI Switch", "hdmi switch", 24.99, 4,
        "HDMI Switch {ports}, {ver}",
        "{ports} HDMI switch, {ver}. Connects several HDMI sources such as a game console, streaming "
        "stick and Blu-ray player to one TV; auto-switching with remote control.",
        {"ports": plain("3 In 1 Out", "5 In 1 Out", "2 In 1 Out Bi-Directional", "4 In 2 Out Matrix"),
         "ver": plain("4K@60Hz HDR", "4K@30Hz", "8K@60Hz")}),
    Sub(VIDEO, "Video Capture Card", "capture card", 29.99, 3,
        "Video Capture Card {kind}",
        "USB video capture device, {kind}. Records and streams video from cameras, game consoles "
        "and VCRs to a computer; works with OBS.",
        {"kind": plain("HDMI to USB 3.0, 1080p60", "Analog Composite and S-Video to USB, VHS to Digital",
                       "4K HDMI Passthrough, USB-C")}),
    # ---------------------------------------------------------------- audio
    Sub(AUDIO, "3.5mm Aux Cable", "aux cable", 7.99, 7,
        "3.5mm Aux Cable {len}, Male to Male Stereo, {feat}",
        "{len} 3.5mm auxiliary audio cable, male to male stereo. Plays music from phones, laptops "
        "and MP3 players through car stereos, speakers and headphones.",
        {"len": lengths(3, 6, 10, 1.5, 15), "feat": CABLE}),
    Sub(AUDIO, "RCA Stereo Audio Cable", "rca audio cable", 8.99, 6,
        "RCA Stereo Audio Cable {len}, 2RCA Red White Male to Male, {feat}",
        "{len} stereo RCA audio cable with red and white plugs. Connects turntables, receivers, "
        "amplifiers, CD players and TVs to speakers and home theater systems.",
        {"len": lengths(3, 6, 12, 25), "feat": CABLE}),
    Sub(AUDIO, "Optical Toslink Cable", "optical cable", 9.99, 6,
        "Optical Toslink Cable {len}, Digital Audio, {feat}",
        "{len} optical digital audio cable with Toslink connectors. Sends Dolby Digital and DTS "
        "surround sound from TVs and consoles to soundbars and AV receivers.",
        {"len": lengths(3, 6, 10, 15, 25), "feat": plain("Nylon Braided", "Slim Jacket", "Gold-Plated")}),
    Sub(AUDIO, "Headphone Splitter", "headphone splitter", 6.99, 3,
        "Headphone Splitter {kind}",
        "3.5mm headphone splitter, {kind}. Lets two people listen to the same phone, tablet or "
        "laptop with their own headphones.",
        {"kind": plain("1 Male to 2 Female, Braided", "Y Cable with Mic and Audio Split", "5-Way Hub")}),
    Sub(AUDIO, "Speaker Wire", "speaker wire", 14.99, 4,
        "Speaker Wire {gauge}, {len}, Oxygen-Free Copper",
        "{gauge} speaker wire, {len} spool, oxygen-free copper with polarity marking. For home "
        "theater surround speakers, car audio and stereo amplifiers.",
        {"gauge": plain("16 AWG", "14 AWG", "12 AWG"), "len": plain("50 ft", "100 ft", "25 ft")}),
    Sub(AUDIO, "Bluetooth Audio Receiver", "bluetooth receiver", 19.99, 3,
        "Bluetooth Audio Receiver {kind}",
        "Bluetooth 5.0 audio receiver, {kind}. Adds wireless music streaming to older stereos, "
        "speakers and car audio through aux or RCA.",
        {"kind": plain("with 3.5mm Aux and RCA Output", "for Car Stereo, Hands-Free Calling",
                       "Hi-Fi with Optical Output")}),
    # ---------------------------------------------------------------- usb
    Sub(USB, "USB-C Cable", "usb-c cable", 9.99, 8,
        "USB-C Cable {len}, {spec}, {feat}",
        "{len} USB-C cable, {spec}. Charges and syncs phones, tablets, laptops and handheld consoles "
        "with USB Type-C ports.",
        {"len": lengths(3, 6, 10, 1.5), "spec": plain("USB-C to USB-C 100W PD", "USB-A to USB-C Fast Charging",
                                                      "USB 3.2 Gen 2 10Gbps Data"),
         "feat": plain("Nylon Braided", "Braided", "Slim Jacket")}),
    Sub(USB, "Micro-USB Cable", "micro-usb cable", 6.99, 5,
        "Micro-USB Cable {len}, USB-A to Micro-B, {feat}",
        "{len} micro-USB charging and data cable. For older Android phones, e-readers, Bluetooth "
        "speakers, game controllers and power banks.",
        {"len": lengths(3, 6, 10, 1), "feat": plain("Nylon Braided", "2-Pack", "3-Pack", "Right Angle")}),
    Sub(USB, "USB Hub", "usb hub", 22.99, 6,
        "USB Hub {ports}, {spec}",
        "{ports} USB hub, {spec}. Adds ports for keyboards, mice, flash drives and external drives "
        "to laptops and desktops.",
        {"ports": plain("4-Port", "7-Port", "10-Port", "USB-C 6-in-1"),
         "spec": plain("USB 3.0 Aluminum", "Powered with Individual Switches", "with HDMI and SD Reader")}),
    Sub(USB, "USB-C to USB-A Adapter", "usb-c adapter", 8.99, 4,
        "USB-C to USB-A Adapter {kind}",
        "USB-C to USB-A adapter, {kind}. Connects USB-A flash drives, mice and cables to new "
        "laptops, tablets and phones with USB-C ports.",
        {"kind": plain("2-Pack, USB 3.1 OTG", "Aluminum, 10Gbps", "4-Pack", "with Keychain")}),
    Sub(USB, "USB Extension Cable", "usb extension cable", 7.99, 5,
        "USB Extension Cable {len}, USB 3.0 Male to Female, {feat}",
        "{len} USB 3.0 extension cable, A male to A female. Extends webcams, printers, game "
        "controllers and Wi-Fi adapters.",
        {"len": lengths(3, 6, 10, 15), "feat": plain("Braided", "Double Shielded", "Slim Jacket")}),
    # ---------------------------------------------------------------- power
    Sub(POWER, "Wall Charger", "wall charger", 17.99, 7,
        "Wall Charger {watt}, {spec}",
        "{watt} USB wall charger, {spec}. Fast charges phones, tablets and earbuds; foldable plug.",
        {"watt": [("20W", 0.8), ("35W", 1.0), ("65W", 1.6), ("100W", 2.2), ("12W", 0.6)],
         "spec": plain("USB-C PD GaN", "Dual Port USB-C and USB-A", "4-Port Charging Station")}),
    Sub(POWER, "Car Charger", "car charger", 12.99, 5,
        "Car Charger {watt}, {spec}",
        "{watt} car charger for the 12V socket, {spec}. Charges phones and tablets on the road.",
        {"watt": [("30W", 1.0), ("48W", 1.3), ("60W", 1.5), ("24W", 0.8)],
         "spec": plain("Dual USB-C PD", "USB-C and USB-A Quick Charge", "with Coiled USB-C Cable")}),
    Sub(POWER, "Power Bank", "power bank", 29.99, 7,
        "Power Bank {cap}, {spec}",
        "{cap} portable power bank, {spec}. Recharges phones, tablets and earbuds several times; "
        "LED battery indicator.",
        {"cap": [("10000mAh", 0.8), ("20000mAh", 1.2), ("26800mAh", 1.6), ("5000mAh", 0.6)],
         "spec": plain("USB-C PD 22.5W", "Slim with Built-in Cables", "Laptop 65W Output")}),
    Sub(POWER, "Laptop Power Adapter", "laptop charger", 34.99, 5,
        "Laptop Power Adapter {watt}, {spec}",
        "{watt} replacement laptop power adapter, {spec}. Charges notebooks and ultrabooks; "
        "over-voltage and short-circuit protection.",
        {"watt": [("65W", 1.0), ("90W", 1.25), ("100W", 1.4), ("45W", 0.85)],
         "spec": plain("USB-C Universal", "Barrel Tip Set", "with 6 ft Cord")}),
    Sub(POWER, "Surge Protector", "surge protector", 24.99, 5,
        "Surge Protector Power Strip {outlets}, {spec}",
        "Surge protector power strip with {outlets}, {spec}. Protects TVs, computers and home "
        "theater gear from power spikes.",
        {"outlets": plain("6 Outlets", "12 Outlets", "8 Outlets"),
         "spec": plain("2 USB Ports, 6 ft Cord", "4000 Joules", "Flat Plug, 10 ft Cord")}),
    # ---------------------------------------------------------------- headphones
    Sub(HEAD, "Over-Ear Headphones", "headphones", 59.99, 6,
        "Over-Ear Headphones {model}, {spec}",
        "Wired over-ear headphones {model}, {spec}. Closed-back design with memory foam ear cushions "
        "for studio monitoring and home listening.",
        {"model": plain("HX-200", "Studio 50", "Reference R7", "Classic C3", "Monitor M40"),
         "spec": plain("Detachable Cable", "Foldable, 3.5mm", "Deep Bass")}),
    Sub(HEAD, "Earbuds", "earbuds", 19.99, 7,
        "Earbuds {model}, {spec}",
        "In-ear earbuds {model}, {spec}. Lightweight, with silicone ear tips in three sizes and an "
        "inline mic for calls.",
        {"model": plain("E1", "Buds Lite", "Sport S2", "Mini M3", "Air A5", "Bass B7"),
         "spec": plain("True Wireless Bluetooth 5.3", "Wired 3.5mm with Mic", "USB-C Wired", "Sweatproof")}),
    Sub(HEAD, "Wireless Headphones", "wireless headphones", 79.99, 7,
        "Wireless Headphones {model}, {spec}",
        "Bluetooth wireless headphones {model}, {spec}. Over-ear, up to 40 hours of battery, with "
        "multipoint pairing for phone and laptop.",
        {"model": plain("Q30", "Air Max 2", "Nova NC", "Flow 700", "Wave W2", "Echo E9"),
         "spec": plain("Active Noise Cancelling", "Hi-Res Audio", "Lightweight Foldable")}),
    Sub(HEAD, "Gaming Headset", "gaming headset", 49.99, 6,
        "Gaming Headset {model}, {spec}",
        "Gaming headset {model}, {spec}. Noise-cancelling boom mic, 7.1 surround sound and soft "
        "ear cushions for PC, PS5, Xbox and Switch.",
        {"model": plain("G5", "Raid X", "Stealth 300", "Arena Pro", "Vortex V1"),
         "spec": plain("RGB, USB", "Wireless 2.4GHz", "3.5mm Multi-Platform")}),
    # ---------------------------------------------------------------- storage
    Sub(STORAGE, "USB Flash Drive", "flash drive", 12.99, 7,
        "USB Flash Drive {cap}, {spec}",
        "{cap} USB flash drive, {spec}. Stores and moves documents, photos and videos between "
        "computers; keyring loop.",
        {"cap": [("32GB", 0.6), ("64GB", 0.9), ("128GB", 1.3), ("256GB", 2.0)],
         "spec": plain("USB 3.1", "Dual USB-C and USB-A", "Metal Swivel", "2-Pack")}),
    Sub(STORAGE, "microSD Card", "microsd card", 18.99, 7,
        "microSD Card {cap}, {spec}",
        "{cap} microSDXC memory card, {spec}, with SD adapter. For phones, action cameras, drones "
        "and handheld game consoles.",
        {"cap": [("64GB", 0.6), ("128GB", 1.0), ("256GB", 1.6), ("512GB", 2.8)],
         "spec": plain("U3 A2 V30", "UHS-I 100MB/s", "High Endurance")}),
    Sub(STORAGE, "External SSD", "external ssd", 89.99, 5,
        "External SSD {cap}, {spec}",
        "{cap} portable external SSD, {spec}. Fast backups and file transfers for laptops, "
        "consoles and video editing.",
        {"cap": [("500GB", 0.7), ("1TB", 1.0), ("2TB", 1.7), ("4TB", 3.0)],
         "spec": plain("USB-C 1050MB/s", "Rugged Shockproof", "USB 3.2 Gen 2x2 2000MB/s")}),
    Sub(STORAGE, "External Hard Drive", "external hard drive", 69.99, 5,
        "External Hard Drive {cap}, {spec}",
        "{cap} external hard drive, {spec}. Bulk storage and automatic backup for PCs, Macs and "
        "game consoles.",
        {"cap": [("1TB", 0.75), ("2TB", 1.0), ("4TB", 1.5), ("5TB", 1.8), ("8TB", 2.5)],
         "spec": plain("Portable USB 3.0", "Desktop with Power Supply", "Slim Aluminum")}),
    Sub(STORAGE, "SD Card Reader", "card reader", 11.99, 3,
        "SD Card Reader {kind}",
        "Memory card reader, {kind}. Reads SD, microSD and CF cards from cameras and drones.",
        {"kind": plain("USB 3.0 Dual Slot", "USB-C 3-in-1", "Multi-Card with CF Slot")}),
    # ---------------------------------------------------------------- networking
    Sub(NET, "Ethernet Cable", "ethernet cable", 9.99, 9,
        "Ethernet Cable {len}, {grade}, {feat}",
        "{len} Ethernet network cable, {grade}, RJ45 connectors. Wired internet for routers, "
        "switches, gaming consoles, smart TVs and PCs.",
        {"len": lengths(3, 10, 25, 50, 100, 6), "grade": plain("Cat6 Gigabit", "Cat8 40Gbps", "Cat6a 10Gbps",
                                                              "Cat5e Flat"),
         "feat": plain("Snagless", "Shielded", "Braided")}),
    Sub(NET, "Wi-Fi Adapter", "wi-fi adapter", 19.99, 4,
        "Wi-Fi Adapter {spec}",
        "USB Wi-Fi adapter, {spec}. Adds wireless internet to desktops and upgrades older laptops.",
        {"spec": plain("AC1300 Dual Band USB 3.0", "AX1800 Wi-Fi 6", "N150 Nano", "AC600 with Antenna")}),
    Sub(NET, "Router", "router", 79.99, 5,
        "Router {spec}",
        "Wireless router, {spec}. Whole-home Wi-Fi coverage with gigabit Ethernet ports and parental "
        "controls.",
        {"spec": [("AX3000 Wi-Fi 6 Dual Band", 1.0), ("AC1200 Dual Band", 0.55), ("AXE5400 Wi-Fi 6E Tri-Band", 2.2),
                  ("Mesh System 3-Pack", 2.6)]}),
    Sub(NET, "Network Switch", "network switch", 24.99, 4,
        "Network Switch {ports}, {spec}",
        "{ports} Ethernet network switch, {spec}. Plug-and-play wired ports for home offices and "
        "entertainment centers.",
        {"ports": [("5-Port", 0.8), ("8-Port", 1.0), ("16-Port", 2.0)],
         "spec": plain("Gigabit Unmanaged", "PoE+", "Metal Desktop")}),
    Sub(NET, "Wi-Fi Range Extender", "range extender", 34.99, 3,
        "Wi-Fi Range Extender {spec}",
        "Wi-Fi range extender, {spec}. Repeats the router signal to remove dead zones in upstairs "
        "rooms and backyards.",
        {"spec": plain("AC1200 Dual Band", "AX1500 Wi-Fi 6", "N300 Wall Plug")}),
]  # fmt: skip

# Personas: dominant-category candidates, secondary categories, subcategory taste boosts.
PERSONAS = {
    "retro-av": {
        "dominant": [VIDEO],
        "secondary": [AUDIO, STORAGE],
        "boost": {"S-Video Cable": 1.6, "S-Video to RCA Adapter": 1.5, "Composite RCA Video Cable": 1.4,
                  "Component Video Cable": 1.0, "Video Capture Card": 1.0, "RCA Stereo Audio Cable": 1.2,
                  "VGA Cable": 0.4, "Speaker Wire": 0.5},
    },
    "home-theater": {
        "dominant": [VIDEO],
        "secondary": [AUDIO, POWER, NET],
        "boost": {"HDMI Cable": 1.3, "HDMI Switch": 1.2, "Optical Toslink Cable": 1.2, "Speaker Wire": 1.0,
                  "Component Video Cable": 0.5, "Surge Protector": 1.0, "RCA Stereo Audio Cable": 0.6},
    },
    "mobile": {
        "dominant": [USB, POWER],
        "secondary": [POWER, USB, HEAD],
        "boost": {"USB-C Cable": 1.2, "Wall Charger": 1.0, "Power Bank": 1.2, "Car Charger": 0.8,
                  "Earbuds": 1.2, "USB-C to USB-A Adapter": 0.8, "Micro-USB Cable": 0.4},
    },
    "pc-builder": {
        "dominant": [STORAGE, NET],
        "secondary": [USB, VIDEO, STORAGE, NET],
        "boost": {"External SSD": 1.0, "USB Hub": 1.2, "DisplayPort Cable": 1.5, "Ethernet Cable": 1.0,
                  "Wi-Fi Adapter": 0.8, "DVI Adapter": 0.8, "Network Switch": 0.8},
    },
    "audiophile": {
        "dominant": [HEAD, AUDIO],
        "secondary": [AUDIO, HEAD],
        "boost": {"Over-Ear Headphones": 1.2, "Wireless Headphones": 1.0, "Optical Toslink Cable": 0.8,
                  "3.5mm Aux Cable": 0.8, "Bluetooth Audio Receiver": 0.8},
    },
    "gamer": {
        "dominant": [HEAD],
        "secondary": [VIDEO, NET, STORAGE],
        "boost": {"Gaming Headset": 1.8, "HDMI Cable": 1.0, "DisplayPort Cable": 1.0, "Ethernet Cable": 1.0,
                  "External SSD": 0.8, "Video Capture Card": 0.8},
    },
    "home-office": {
        "dominant": [NET, USB],
        "secondary": [POWER, USB, NET, VIDEO],
        "boost": {"Router": 1.0, "Wi-Fi Range Extender": 1.0, "USB Hub": 1.0, "HDMI to VGA Adapter": 1.0,
                  "VGA Cable": 0.8, "Laptop Power Adapter": 1.0, "Surge Protector": 0.8},
    },
    "traveler": {
        "dominant": [POWER],
        "secondary": [STORAGE, HEAD],
        "boost": {"Power Bank": 1.5, "Car Charger": 1.0, "microSD Card": 1.2, "Earbuds": 1.0,
                  "USB Flash Drive": 0.6, "Wireless Headphones": 0.6},
    },
}  # fmt: skip
PERSONA_WEIGHTS = {"retro-av": 0.16, "home-theater": 0.16, "mobile": 0.15, "pc-builder": 0.13,
                   "audiophile": 0.1, "gamer": 0.1, "home-office": 0.1, "traveler": 0.1}  # fmt: skip

# Review phrases: praise and complaints per category, a few specific to one subcategory.
PRAISE = {
    VIDEO: [
        "picture is sharp on my old TV",
        "clear picture with no ghosting",
        "solid connectors, fits snugly",
        "video signal is stable and clean",
        "works perfectly with my setup",
    ],
    AUDIO: [
        "sound is clean with no hum",
        "clear stereo sound",
        "good connectors, no crackle",
        "music sounds great through it",
    ],
    USB: [
        "charges fast and syncs reliably",
        "fast data transfers",
        "sturdy plugs that click in firmly",
        "works with all my devices",
    ],
    POWER: ["charges my phone quickly", "stays cool while charging", "compact and powerful", "holds a charge for days"],
    HEAD: ["comfortable for hours", "rich bass and clear mids", "battery lasts all week", "mic sounds clear on calls"],
    STORAGE: [
        "fast transfers and plenty of space",
        "reliable for backups",
        "reads and writes at full speed",
        "compact and quick",
    ],
    NET: ["stable connection all day", "full gigabit speed", "easy setup and strong signal", "no more dropouts"],
}
COMPLAINTS = {
    VIDEO: [
        "picture flickers and rolls",
        "colors look washed out",
        "connector is loose",
        "no signal half the time",
        "image has ghosting",
    ],
    AUDIO: ["there is a constant hum", "one channel cuts out", "plugs feel cheap", "sound crackles"],
    USB: [
        "stopped charging after a month",
        "data transfer keeps failing",
        "plug wiggles in the port",
        "only charges slowly",
    ],
    POWER: ["gets very hot", "charges slowly", "stopped working after two weeks", "loses charge quickly"],
    HEAD: ["left ear cut out", "uncomfortable after an hour", "sound is tinny", "Bluetooth keeps dropping"],
    STORAGE: [
        "died after a month",
        "much slower than advertised",
        "files got corrupted",
        "not recognized by my laptop",
    ],
    NET: ["connection drops constantly", "speed is far below spec", "setup was a nightmare", "signal is weak upstairs"],
}
SPECIFIC = {
    "S-Video Cable": (["great picture from my old VCR", "sharper than composite on my CRT"],
                      ["pins bent on arrival", "picture is black and white"]),
    "S-Video to RCA Adapter": (["works great with my camcorder", "old console looks fine on the new TV"],
                               ["no color, only black and white", "adapter is flimsy"]),
    "HDMI Switch": (["switches inputs instantly", "remote works well"], ["randomly switches inputs",
                                                                          "HDR does not pass through"]),
    "Gaming Headset": (["footsteps are easy to hear", "teammates hear me clearly"],
                       ["mic picks up everything", "cord is too short for my desk"]),
}  # fmt: skip
OPENERS = {
    5: ["Great {noun}, {p}.", "Excellent {noun}; {p}.", "Love this {noun}, {p}.",
        "Perfect {noun} for the price, {p}.", "Best {noun} I have bought, {p}."],
    4: ["Good {noun}, {p}.", "Solid {noun}, {p}.", "Nice {noun}, {p}, though a bit pricey.",
        "Pretty good {noun}; {p}."],
    3: ["Okay {noun}, {p} but {c}.", "Average {noun}; {c}.", "Decent {noun}, though {c}.",
        "It is an okay {noun}, nothing special."],
    2: ["Disappointing {noun}, {c}.", "Not a great {noun}; {c}.", "Poor {noun}, {c}."],
    1: ["Terrible {noun}, {c}.", "Returned this {noun} because {c}.", "Awful {noun}; {c}.",
        "Do not buy this {noun}, {c}."],
}  # fmt: skip
TAILS = {5: ["Would buy again.", "Highly recommend."], 4: ["Does the job.", "Happy with it."],
         3: ["It works.", ""], 2: ["Expected better.", ""], 1: ["Would not recommend.", "Waste of money."]}  # fmt: skip


def _price_text(rng: np.random.Generator, price: float) -> str:
    """Shop-style price near `price`: 7.99, 12.49, 29.95..."""
    cents = float(rng.choice([0.99, 0.99, 0.99, 0.49, 0.95]))
    return f"{max(round(price), 3) - 1 + cents:.2f}"


def make_items(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for sub in SUBS:
        brands = [b for b, cats in BRANDS.items() if sub.category in cats]
        seen: set[str] = set()
        keys = list(sub.options)
        for j in range(sub.n):
            # Option k cycles with offset so variants differ; the first option walks in order.
            picks = {}
            for k_i, key in enumerate(keys):
                opts = sub.options[key]
                idx = j % len(opts) if k_i == 0 else int(rng.integers(len(opts)))
                picks[key] = opts[idx]
            words = {k: v[0] for k, v in picks.items()}
            factor = float(np.prod([v[1] for v in picks.values()]))
            brand = brands[int(rng.integers(len(brands)))]
            body = sub.title.format(base=sub.base, **words)
            # The single canonical "S-Video Cable ..." title carries no brand prefix.
            title = body if (sub.name == "S-Video Cable" and j == 0) else f"{brand} {body}"
            extra = 0
            while title in seen:
                extra += 1
                title = f"{brand} {body}, {COLORS[extra % len(COLORS)]}"
            seen.add(title)
            desc = sub.desc.format(**words)
            if "feat" in words:
                desc += f" {words['feat']} construction for durability."
            desc += f" By {brand}."
            price = sub.price * factor * float(rng.lognormal(0.0, 0.22))
            rows.append(
                {
                    "title": title,
                    "description": desc,
                    "brand": brand,
                    "category": sub.category,
                    "subcategory": sub.name,
                    "price": _price_text(rng, price),
                }
            )
    items = pd.DataFrame(rows)
    # Ids in shuffled order so an item's id says nothing about its category.
    order = rng.permutation(len(items))
    items["item_id"] = [f"D{k + 1:04d}" for k in np.argsort(order)]
    missing = rng.choice(np.flatnonzero(items["title"].str.len() > 0), N_MISSING_PRICES, replace=False)
    missing = [m for m in missing if not items.loc[m, "title"].startswith("S-Video Cable")]
    items.loc[missing, "price"] = ""
    items = items.sort_values("item_id").reset_index(drop=True)
    return items[["item_id", "title", "description", "brand", "category", "subcategory", "price"]]


def _review(rng: np.random.Generator, rating: int, sub: Sub) -> str:
    praise, complaints = list(PRAISE[sub.category]), list(COMPLAINTS[sub.category])
    if sub.name in SPECIFIC:
        praise += SPECIFIC[sub.name][0] * 2
        complaints += SPECIFIC[sub.name][1] * 2
    template = OPENERS[rating][int(rng.integers(len(OPENERS[rating])))]
    text = template.format(
        noun=sub.noun,
        p=praise[int(rng.integers(len(praise)))],
        c=complaints[int(rng.integers(len(complaints)))],
    )
    tail = TAILS[rating][int(rng.integers(len(TAILS[rating])))]
    if tail and rng.random() < 0.5 and len((text + " " + tail).split()) <= 20:
        text = f"{text} {tail}"
    if len(text.split()) < 5:
        text = f"{text} {TAILS[rating][0] or 'It works.'}"
    return text


def _pick(rng: np.random.Generator, pool: np.ndarray, k: int, weight: np.ndarray, chosen: list[int]) -> None:
    """Append k items of pool not yet chosen, drawn without replacement in proportion to weight."""
    pool = np.setdiff1d(pool, chosen)
    k = min(k, len(pool))
    if k > 0:
        p = weight[pool] / weight[pool].sum()
        chosen.extend(int(i) for i in rng.choice(pool, k, replace=False, p=p))


def make_ratings(rng: np.random.Generator, items: pd.DataFrame) -> pd.DataFrame:
    subs = {s.name: s for s in SUBS}
    n_items = len(items)
    cat = items["category"].to_numpy()
    subcat = items["subcategory"].to_numpy()
    brand = items["brand"].to_numpy()
    brand_names = list(BRANDS)
    median = items.groupby("subcategory")["price"].transform(lambda s: pd.to_numeric(s, errors="coerce").median())
    price = pd.to_numeric(items["price"], errors="coerce").fillna(median).to_numpy(float)
    rel_price = np.log(price / median.to_numpy(float))  # > 0: dearer than the typical item of its kind
    quality = rng.normal(0.0, 0.7, n_items)
    popularity = rng.lognormal(0.0, 0.7, n_items)
    by_cat = {c: np.flatnonzero(cat == c) for c in CATEGORIES}

    personas = list(PERSONA_WEIGHTS)
    p_persona = np.array([PERSONA_WEIGHTS[p] for p in personas])
    p_persona = p_persona / p_persona.sum()

    rows = []
    for u in range(N_USERS):
        user_id = f"U{u + 1:04d}"
        persona = PERSONAS[personas[int(rng.choice(len(personas), p=p_persona))]]
        dominant = persona["dominant"][int(rng.integers(len(persona["dominant"])))]
        secondary_pool = [c for c in persona["secondary"] if c != dominant]
        n_sec = int(rng.integers(0, min(2, len(secondary_pool)) + 1))
        secondary = [secondary_pool[i] for i in rng.permutation(len(secondary_pool))[:n_sec]]
        sensitivity = float(rng.uniform(0.0, 1.2))
        fav_brand, bad_brand = (brand_names[i] for i in rng.choice(len(brand_names), 2, replace=False))
        boost = np.array([persona["boost"].get(s, 0.0) for s in subcat]) * rng.uniform(0.6, 1.2)
        brand_aff = np.where(brand == fav_brand, 0.5, 0.0) + np.where(brand == bad_brand, -0.6, 0.0)

        n = 20 + min(int(rng.exponential(6.0)), 20)  # 20-40, most users near the low end
        n_dom = min(math.ceil(n * rng.uniform(0.55, 0.78)), len(by_cat[dominant]) - 3)
        n = min(n, 2 * n_dom)  # the dominant category always holds at least half
        n_rand = int(round((n - n_dom) * rng.uniform(0.0, 0.35))) if secondary else n - n_dom
        n_sec_total = n - n_dom - n_rand

        # Choice weights: popularity, taste for the subcategory, brand, and (for the sensitive) price.
        weight = popularity * np.exp(1.1 * boost + brand_aff - sensitivity * np.clip(rel_price, 0, None))
        chosen: list[int] = []
        _pick(rng, by_cat[dominant], n_dom, weight, chosen)
        if secondary:
            shares = rng.dirichlet(np.ones(len(secondary)) * 2.0)
            counts = np.floor(shares * n_sec_total).astype(int)
            counts[0] += n_sec_total - counts.sum()
            for c, k in zip(secondary, counts, strict=True):
                _pick(rng, by_cat[c], int(k), weight, chosen)
        others = np.concatenate([by_cat[c] for c in CATEGORIES if c != dominant and c not in secondary])
        _pick(rng, others, n - len(chosen), weight, chosen)
        chosen_arr = np.array(chosen)
        rng.shuffle(chosen_arr)

        match = np.where(cat[chosen_arr] == dominant, 0.3, np.where(np.isin(cat[chosen_arr], secondary), 0.1, -0.25))
        score = (
            3.4
            + quality[chosen_arr]
            + match
            + 0.3 * boost[chosen_arr]
            + brand_aff[chosen_arr]
            - 1.2 * sensitivity * rel_price[chosen_arr]
            + rng.normal(0.0, 0.8, len(chosen_arr))
        )
        ratings = np.clip(np.round(score), 1, 5).astype(int)

        # Timestamps: an activity window inside the two years, strictly increasing per user.
        start = rng.uniform(0.0, 0.6) * T_SPAN
        length = rng.uniform(0.25, 1.0) * (T_SPAN - start)
        gaps = rng.exponential(1.0, len(chosen_arr))
        offsets = np.cumsum(gaps) / gaps.sum() * (length - len(chosen_arr))
        stamps = T_START + int(start) + offsets.astype(np.int64) + np.arange(len(chosen_arr))
        for i, r, t in zip(chosen_arr, ratings, stamps, strict=True):
            rows.append(
                {
                    "user_id": user_id,
                    "item_id": items.at[int(i), "item_id"],
                    "rating": int(r),
                    "timestamp": int(t),
                    "review": _review(rng, int(r), subs[subcat[i]]),
                }
            )
    return pd.DataFrame(rows)


def generate(out_dir: str | Path, seed: int = SEED) -> dict[str, Path]:
    """Write items.csv and ratings.csv into out_dir; returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = make_items(rng)
    ratings = make_ratings(rng, items)
    paths = {"items": out / "items.csv", "ratings": out / "ratings.csv"}
    items.to_csv(paths["items"], index=False, lineterminator="\n")
    ratings.to_csv(paths["ratings"], index=False, lineterminator="\n")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "demo"))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    paths = generate(args.out, args.seed)
    for name, path in paths.items():
        print(f"{name}: {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
