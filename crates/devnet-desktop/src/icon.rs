//! The tray icon, composed from layers and drawn at any size: a glyph (a
//! hexagon, the cluster) in the panel's ink, cut away where the state's
//! badge sits, and the badge. Drawn from shapes rather than scaled from one
//! bitmap, so it stays sharp at 16 px; tests check each state's icon is
//! told apart from every other at 16 px and that the glyph has contrast on
//! light and dark panels.

use serde::{Deserialize, Serialize};

use crate::state::TrayState;

/// The panel the icon sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Theme {
    /// A light panel: dark ink.
    Light,
    /// A dark panel: light ink.
    Dark,
}

impl Theme {
    pub const ALL: [Theme; 2] = [Theme::Light, Theme::Dark];

    /// The glyph's colour.
    pub fn ink(self) -> [u8; 3] {
        match self {
            Theme::Light => [0x26, 0x2a, 0x30],
            Theme::Dark => [0xee, 0xf0, 0xf2],
        }
    }

    /// A typical panel colour, for contrast checks and previews.
    pub fn panel(self) -> [u8; 3] {
        match self {
            Theme::Light => [0xf2, 0xf2, 0xf2],
            Theme::Dark => [0x24, 0x24, 0x28],
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }
}

const GREEN: [u8; 3] = [0x1e, 0x9e, 0x5a];
const BLUE: [u8; 3] = [0x2f, 0x6f, 0xe0];
const AMBER: [u8; 3] = [0xe0, 0x8c, 0x00];
const RED: [u8; 3] = [0xd9, 0x30, 0x30];
const WHITE: [u8; 3] = [0xff, 0xff, 0xff];

/// The layers an icon is made of, bottom first.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    /// The hexagon, at this opacity.
    Glyph { alpha: f32 },
    /// A filled disk in the badge's place (two colours split down the middle for `split`).
    Badge { left: [u8; 3], right: [u8; 3] },
    /// An open ring in the badge's place (busy).
    BusyRing,
    /// A mark drawn white inside the badge.
    Mark(Mark),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// A check: the office routes it, nothing of ours in the way.
    Check,
    /// An arch: through the tunnel.
    Arch,
    /// `!`.
    Bang,
    /// `×`.
    Cross,
}

fn layers(state: TrayState) -> Vec<Layer> {
    let glyph = Layer::Glyph { alpha: if state == TrayState::Off { 0.45 } else { 1.0 } };
    match state {
        TrayState::Off => vec![glyph],
        TrayState::Connecting => vec![glyph, Layer::BusyRing],
        TrayState::Direct => vec![glyph, Layer::Badge { left: GREEN, right: GREEN }, Layer::Mark(Mark::Check)],
        TrayState::Tunnel => vec![glyph, Layer::Badge { left: BLUE, right: BLUE }, Layer::Mark(Mark::Arch)],
        TrayState::Split => vec![glyph, Layer::Badge { left: GREEN, right: BLUE }],
        TrayState::Degraded => vec![glyph, Layer::Badge { left: AMBER, right: AMBER }, Layer::Mark(Mark::Bang)],
        TrayState::Error => vec![glyph, Layer::Badge { left: RED, right: RED }, Layer::Mark(Mark::Cross)],
    }
}

// Shapes in unit coordinates (0..1, y down), as signed distances.
const BADGE: (f32, f32, f32) = (0.70, 0.70, 0.30);
const GAP: f32 = 0.07;

fn circle(x: f32, y: f32, cx: f32, cy: f32, r: f32) -> f32 {
    ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() - r
}

fn segment(x: f32, y: f32, a: (f32, f32), b: (f32, f32), half_width: f32) -> f32 {
    let (px, py, bx, by) = (x - a.0, y - a.1, b.0 - a.0, b.1 - a.1);
    let h = ((px * bx + py * by) / (bx * bx + by * by)).clamp(0.0, 1.0);
    ((px - bx * h).powi(2) + (py - by * h).powi(2)).sqrt() - half_width
}

/// A hexagon ring (pointy top) centred in the icon, with a node in the
/// middle when no badge covers it.
fn hexagon(x: f32, y: f32, with_node: bool) -> f32 {
    let (cx, cy, r, w) = (0.45, 0.47, 0.38, 0.075);
    let mut d = f32::MAX;
    for i in 0..6 {
        let a0 = std::f32::consts::PI / 3.0 * i as f32 - std::f32::consts::FRAC_PI_2;
        let a1 = a0 + std::f32::consts::PI / 3.0;
        let p0 = (cx + r * a0.cos(), cy + r * a0.sin());
        let p1 = (cx + r * a1.cos(), cy + r * a1.sin());
        d = d.min(segment(x, y, p0, p1, w));
    }
    // The cluster's middle: one node (a badge would cut it to a sliver).
    if with_node { d.min(circle(x, y, cx, cy, 0.1)) } else { d }
}

fn mark(m: Mark, x: f32, y: f32) -> f32 {
    let (cx, cy, r) = BADGE;
    let w = r * 0.16;
    match m {
        Mark::Check => segment(x, y, (cx - r * 0.5, cy + r * 0.02), (cx - r * 0.12, cy + r * 0.4), w).min(segment(
            x,
            y,
            (cx - r * 0.12, cy + r * 0.4),
            (cx + r * 0.5, cy - r * 0.38),
            w,
        )),
        Mark::Arch => {
            // The upper half of a ring, with legs.
            let ring = (circle(x, y, cx, cy + r * 0.2, r * 0.45)).abs() - w;
            if y > cy + r * 0.2 {
                segment(x, y, (cx - r * 0.45, cy + r * 0.2), (cx - r * 0.45, cy + r * 0.5), w).min(segment(
                    x,
                    y,
                    (cx + r * 0.45, cy + r * 0.2),
                    (cx + r * 0.45, cy + r * 0.5),
                    w,
                ))
            } else {
                ring
            }
        }
        Mark::Bang => {
            segment(x, y, (cx, cy - r * 0.55), (cx, cy + r * 0.1), w).min(circle(x, y, cx, cy + r * 0.5, w * 1.1))
        }
        Mark::Cross => segment(x, y, (cx - r * 0.45, cy - r * 0.45), (cx + r * 0.45, cy + r * 0.45), w).min(segment(
            x,
            y,
            (cx - r * 0.45, cy + r * 0.45),
            (cx + r * 0.45, cy - r * 0.45),
            w,
        )),
    }
}

/// Coverage of a shape at a sample, from its signed distance.
fn inside(d: f32) -> f32 {
    if d <= 0.0 { 1.0 } else { 0.0 }
}

fn over(dst: &mut [f32; 4], rgb: [u8; 3], a: f32) {
    if a <= 0.0 {
        return;
    }
    let src = [rgb[0] as f32 / 255.0, rgb[1] as f32 / 255.0, rgb[2] as f32 / 255.0];
    let out_a = a + dst[3] * (1.0 - a);
    for i in 0..3 {
        dst[i] = (src[i] * a + dst[i] * dst[3] * (1.0 - a)) / out_a;
    }
    dst[3] = out_a;
}

/// The icon for `state` on a `theme` panel, `size`×`size` RGBA (straight alpha).
pub fn render(state: TrayState, theme: Theme, size: u32) -> Vec<u8> {
    const SS: u32 = 4; // samples per pixel side
    let layers = layers(state);
    let has_badge = layers.len() > 1;
    let mut out = Vec::with_capacity((size * size * 4) as usize);
    for py in 0..size {
        for px in 0..size {
            let mut acc = [0.0f32; 4];
            for sy in 0..SS {
                for sx in 0..SS {
                    let x = (px as f32 + (sx as f32 + 0.5) / SS as f32) / size as f32;
                    let y = (py as f32 + (sy as f32 + 0.5) / SS as f32) / size as f32;
                    let mut s = [0.0f32; 4];
                    let (bx, by, br) = BADGE;
                    for layer in &layers {
                        match *layer {
                            Layer::Glyph { alpha } => {
                                let cut = has_badge && circle(x, y, bx, by, br + GAP) <= 0.0;
                                if !cut {
                                    over(&mut s, theme.ink(), alpha * inside(hexagon(x, y, !has_badge)));
                                }
                            }
                            Layer::Badge { left, right } => {
                                let c = if x < bx { left } else { right };
                                over(&mut s, c, inside(circle(x, y, bx, by, br)));
                            }
                            Layer::BusyRing => {
                                // Three quarters of a ring: the gap says "not yet".
                                let ring = circle(x, y, bx, by, br * 0.72).abs() - br * 0.26;
                                let in_gap = x > bx && y < by;
                                if !in_gap {
                                    over(&mut s, AMBER, inside(ring));
                                }
                            }
                            Layer::Mark(m) => over(&mut s, WHITE, inside(mark(m, x, y))),
                        }
                    }
                    // Accumulate premultiplied.
                    for i in 0..3 {
                        acc[i] += s[i] * s[3];
                    }
                    acc[3] += s[3];
                }
            }
            let n = (SS * SS) as f32;
            let a = acc[3] / n;
            for c in &acc[..3] {
                let v = if a > 0.0 { c / n / a } else { 0.0 };
                out.push((v * 255.0).round().clamp(0.0, 255.0) as u8);
            }
            out.push((a * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

/// RGBA to ARGB32 in network byte order, as StatusNotifierItem's pixmaps want.
pub fn to_argb32_be(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4).flat_map(|p| [p[3], p[0], p[1], p[2]]).collect()
}

/// A PNG of RGBA pixels (stored, not compressed: icons are small, and this
/// keeps the crate free of an encoder dependency).
pub fn png(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut raw = Vec::with_capacity(rgba.len() + height as usize);
    for row in rgba.chunks_exact(width as usize * 4) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    // zlib: header, stored blocks of at most 65535 bytes, Adler-32.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The icon as the panel shows it: composited onto the panel's colour.
    fn on_panel(rgba: &[u8], theme: Theme) -> Vec<[f32; 3]> {
        let bg = theme.panel();
        rgba.chunks_exact(4)
            .map(|p| {
                let a = f32::from(p[3]) / 255.0;
                [0, 1, 2].map(|i| f32::from(p[i]) * a + f32::from(bg[i]) * (1.0 - a))
            })
            .collect()
    }

    fn luminance(c: [f32; 3]) -> f32 {
        let lin = |v: f32| {
            let v = v / 255.0;
            if v <= 0.03928 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
    }

    fn contrast(a: [f32; 3], b: [f32; 3]) -> f32 {
        let (x, y) = (luminance(a), luminance(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn every_state_is_told_apart_from_every_other_at_16_px() {
        for theme in Theme::ALL {
            let icons: Vec<_> = TrayState::ALL.iter().map(|s| (s, on_panel(&render(*s, theme, 16), theme))).collect();
            for (i, (a, pa)) in icons.iter().enumerate() {
                for (b, pb) in &icons[i + 1..] {
                    // Pixels that differ by a clearly visible amount.
                    let differing = pa
                        .iter()
                        .zip(pb)
                        .filter(|(x, y)| x.iter().zip(y.iter()).map(|(p, q)| (p - q).abs()).sum::<f32>() > 90.0)
                        .count();
                    assert!(differing >= 12, "{a:?} and {b:?} on {theme:?} differ in only {differing} of 256 pixels");
                }
            }
        }
    }

    #[test]
    fn the_glyph_has_contrast_on_its_panel_and_the_badge_on_both() {
        for theme in Theme::ALL {
            let ink = theme.ink().map(f32::from);
            let panel = theme.panel().map(f32::from);
            assert!(contrast(ink, panel) >= 7.0, "{theme:?} ink contrast {}", contrast(ink, panel));
            for badge in [GREEN, BLUE, AMBER, RED] {
                // Against the white mark inside it, and against the panel.
                let c = badge.map(f32::from);
                assert!(contrast(c, WHITE.map(f32::from)) >= 2.5, "{badge:?} with its white mark");
                assert!(contrast(c, panel) >= 1.9, "{badge:?} on {theme:?}");
            }
        }
    }

    #[test]
    fn light_and_dark_variants_differ_and_off_is_faint() {
        let light = render(TrayState::Tunnel, Theme::Light, 32);
        let dark = render(TrayState::Tunnel, Theme::Dark, 32);
        assert_ne!(light, dark);
        let opaque = |rgba: &[u8]| rgba.chunks_exact(4).filter(|p| p[3] > 200).count();
        let on = opaque(&render(TrayState::Connecting, Theme::Dark, 32));
        assert_eq!(opaque(&render(TrayState::Off, Theme::Dark, 32)), 0, "off is drawn at partial opacity");
        assert!(on > 100, "{on}");
    }

    #[test]
    fn png_round_trips_through_its_own_structure() {
        let rgba = render(TrayState::Split, Theme::Dark, 16);
        let png = png(&rgba, 16, 16);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926, "the standard CRC-32 check value");
        // The stored block holds the rows, each behind a zero filter byte.
        let idat = png.windows(4).position(|w| w == b"IDAT").expect("IDAT") + 4;
        assert_eq!(&png[idat..idat + 2], &[0x78, 0x01]);
        let len = u16::from_le_bytes([png[idat + 3], png[idat + 4]]) as usize;
        assert_eq!(len, 16 * (16 * 4 + 1));
        assert_eq!(&png[idat + 7..idat + 7 + 5], &[0, rgba[0], rgba[1], rgba[2], rgba[3]]);
        assert_eq!(to_argb32_be(&rgba[..4]), vec![rgba[3], rgba[0], rgba[1], rgba[2]]);
    }
}
