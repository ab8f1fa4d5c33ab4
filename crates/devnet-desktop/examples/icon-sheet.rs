//! Every tray icon on light and dark panels, at 16 and 32 px, scaled up 4×
//! with nearest-neighbour so the real pixels show: `cargo run -p
//! devnet-desktop --example icon-sheet -- sheet.png`.

use devnet_desktop::icon::{Theme, png, render};
use devnet_desktop::state::TrayState;

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "icon-sheet.png".into());
    let (scale, cell) = (4u32, 40u32);
    let sizes = [16u32, 32];
    let width = cell * scale * TrayState::ALL.len() as u32;
    let height = cell * scale * (Theme::ALL.len() * sizes.len()) as u32;
    let mut sheet = vec![0u8; (width * height * 4) as usize];
    for (row, (theme, size)) in Theme::ALL.iter().flat_map(|t| sizes.iter().map(move |s| (*t, *s))).enumerate() {
        for (col, state) in TrayState::ALL.iter().enumerate() {
            let icon = render(*state, theme, size);
            let panel = theme.panel();
            for y in 0..cell * scale {
                for x in 0..cell * scale {
                    let (ix, iy) = (x / scale, y / scale);
                    let mut px = [panel[0], panel[1], panel[2], 255];
                    let off = (cell - size) / 2;
                    if (off..off + size).contains(&ix) && (off..off + size).contains(&iy) {
                        let i = (((iy - off) * size + (ix - off)) * 4) as usize;
                        let a = u32::from(icon[i + 3]);
                        for c in 0..3 {
                            px[c] = ((u32::from(icon[i + c]) * a + u32::from(panel[c]) * (255 - a)) / 255) as u8;
                        }
                    }
                    let gx = col as u32 * cell * scale + x;
                    let gy = row as u32 * cell * scale + y;
                    let o = ((gy * width + gx) * 4) as usize;
                    sheet[o..o + 4].copy_from_slice(&px);
                }
            }
        }
    }
    std::fs::write(&out, png(&sheet, width, height)).expect("writing the sheet");
    println!("{out}: {}", TrayState::ALL.iter().map(|s| s.word()).collect::<Vec<_>>().join(", "));
}
