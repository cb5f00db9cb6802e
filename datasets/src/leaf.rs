//! Direct decoding of the two common list columns, read page by page from
//! their one leaf column instead of through Arrow's list readers (which spend
//! most of their time decoding levels one by one and assembling lists):
//!
//! - a non-null `fixed_size_list<float32|float64>[width]` (float vectors):
//!   values into a pre-sized `f32` buffer, the repetition and definition
//!   levels checked against the only pattern such a column can have (every
//!   level defined, a new row every `width` values) while still encoded, a
//!   byte of eight bit-packed levels at a time ([`read_fixed_floats`]);
//! - a non-null `list<int32|int64>` of non-null values with no empty list
//!   (token sequences): values PLAIN or through the dictionary, row offsets
//!   from the zero bits of the bit-packed repetition levels
//!   ([`read_int_lists`]).
//!
//! Anything else (a nullable list, an empty list, an unsupported encoding,
//! levels that do not fit, a page the reader rejects) makes them answer
//! `None`, and the caller decodes that column chunk through Arrow as
//! before, which gives the same values or the same error.
use std::sync::Arc;

use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::ChunkReader;
use parquet::file::serialized_reader::SerializedPageReader;

/// The leaf column of root column `root` if it can be read directly: its
/// only leaf, floats, with one repeated level and nothing optional (a
/// required list of required values).
pub(crate) fn direct_leaf(metadata: &ParquetMetaData, root: usize, ints: bool) -> Option<usize> {
    let schema = metadata.file_metadata().schema_descr();
    let mut leaves =
        (0..schema.num_columns()).filter(|&leaf| schema.get_column_root_idx(leaf) == root);
    let leaf = leaves.next()?;
    if leaves.next().is_some() {
        return None;
    }
    let column = schema.column(leaf);
    let fits = match column.physical_type() {
        PhysicalType::FLOAT | PhysicalType::DOUBLE => !ints,
        PhysicalType::INT32 | PhysicalType::INT64 => ints,
        _ => false,
    };
    (fits && column.max_def_level() == 1 && column.max_rep_level() == 1).then_some(leaf)
}

/// The values of leaf column `leaf` (see [`direct_leaf`]) of row group
/// `row_group`, a fixed-size list of `width` floats per row, as `rows *
/// width` f32 (doubles are narrowed). `None` when the column chunk holds
/// anything but that pattern in a supported encoding.
pub(crate) fn read_fixed_floats<R: ChunkReader + 'static>(
    reader: Arc<R>,
    metadata: &ParquetMetaData,
    row_group: usize,
    leaf: usize,
    width: usize,
) -> Option<Vec<f32>> {
    if width == 0 {
        return None;
    }
    let group = metadata.row_groups().get(row_group)?;
    let rows = usize::try_from(group.num_rows()).ok()?;
    let total = rows.checked_mul(width)?;
    let column = group.columns().get(leaf)?;
    let double = match column.column_descr().physical_type() {
        PhysicalType::FLOAT => false,
        PhysicalType::DOUBLE => true,
        _ => return None,
    };
    let mut pages = SerializedPageReader::new(reader, column, rows, None).ok()?;
    let rows_pattern = RowPattern::new(width);
    let mut values = Vec::with_capacity(total);
    let mut position = 0usize;
    while let Some(page) = pages.get_next_page().ok()? {
        let DataPage {
            repetition,
            definition,
            encoding,
            values: buf,
            levels: count,
        } = split_page(&page)?;
        if count > total - position
            || !rows_pattern.check(repetition, count, position)
            || !all_defined(definition, count)
        {
            return None;
        }
        let size = if double { 8 } else { 4 };
        if buf.len() != count * size {
            return None;
        }
        match (encoding, double) {
            (Encoding::PLAIN, false) => values.extend(
                buf.chunks_exact(4)
                    .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
            ),
            (Encoding::PLAIN, true) => values.extend(buf.chunks_exact(8).map(|bytes| {
                f64::from_le_bytes([
                    bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                ]) as f32
            })),
            (Encoding::BYTE_STREAM_SPLIT, false) => {
                let [a, b, c, d] = streams::<4>(buf, count);
                values.extend(
                    (0..count)
                        .map(|index| f32::from_le_bytes([a[index], b[index], c[index], d[index]])),
                );
            }
            (Encoding::BYTE_STREAM_SPLIT, true) => {
                let streams = streams::<8>(buf, count);
                values.extend(
                    (0..count).map(|index| {
                        f64::from_le_bytes(streams.map(|stream| stream[index])) as f32
                    }),
                );
            }
            _ => return None,
        }
        position += count;
    }
    (position == total).then_some(values)
}

/// A data page's repetition and definition levels, value encoding, values
/// and number of levels; `None` for a dictionary page, levels in the
/// deprecated BIT_PACKED encoding, nulls, or lengths that do not fit.
fn split_page(page: &Page) -> Option<DataPage<'_>> {
    let ((repetition, definition), encoding, values, levels) = match page {
        Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            rep_level_encoding,
            ..
        } => {
            if *def_level_encoding != Encoding::RLE || *rep_level_encoding != Encoding::RLE {
                return None;
            }
            let (repetition, rest) = length_prefixed(buf)?;
            let (definition, rest) = length_prefixed(rest)?;
            ((repetition, definition), *encoding, rest, *num_values)
        }
        Page::DataPageV2 {
            buf,
            num_values,
            encoding,
            num_nulls,
            def_levels_byte_len,
            rep_levels_byte_len,
            ..
        } => {
            if *num_nulls != 0 {
                return None;
            }
            let (repetition, rest) = buf.split_at_checked(*rep_levels_byte_len as usize)?;
            let (definition, rest) = rest.split_at_checked(*def_levels_byte_len as usize)?;
            ((repetition, definition), *encoding, rest, *num_values)
        }
        Page::DictionaryPage { .. } => return None,
    };
    Some(DataPage {
        repetition,
        definition,
        encoding,
        values,
        levels: levels as usize,
    })
}

/// The parts of a data page.
struct DataPage<'a> {
    repetition: &'a [u8],
    definition: &'a [u8],
    encoding: Encoding,
    values: &'a [u8],
    levels: usize,
}

/// The values and row offsets (`rows + 1`, from 0) of leaf column `leaf`
/// (see [`direct_leaf`]) of row group `row_group`, a non-null list of
/// non-null integers per row, none of them empty. Values PLAIN or
/// dictionary-encoded. `None` for anything else.
pub(crate) fn read_int_lists<R: ChunkReader + 'static>(
    reader: Arc<R>,
    metadata: &ParquetMetaData,
    row_group: usize,
    leaf: usize,
) -> Option<(Vec<i64>, Vec<usize>)> {
    let group = metadata.row_groups().get(row_group)?;
    let rows = usize::try_from(group.num_rows()).ok()?;
    let column = group.columns().get(leaf)?;
    let wide = match column.column_descr().physical_type() {
        PhysicalType::INT32 => false,
        PhysicalType::INT64 => true,
        _ => return None,
    };
    let plain = |buf: &[u8]| -> Option<Vec<i64>> {
        if wide {
            buf.len().is_multiple_of(8).then(|| {
                buf.chunks_exact(8)
                    .map(|bytes| {
                        i64::from_le_bytes([
                            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6],
                            bytes[7],
                        ])
                    })
                    .collect()
            })
        } else {
            buf.len().is_multiple_of(4).then(|| {
                buf.chunks_exact(4)
                    .map(|bytes| {
                        i64::from(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                    })
                    .collect()
            })
        }
    };
    let mut pages = SerializedPageReader::new(reader, column, rows, None).ok()?;
    let mut dictionary: Option<Vec<i64>> = None;
    let mut values: Vec<i64> = Vec::new();
    let mut offsets: Vec<usize> = Vec::with_capacity(rows + 1);
    while let Some(page) = pages.get_next_page().ok()? {
        if let Page::DictionaryPage { buf, encoding, .. } = &page {
            if dictionary.is_some()
                || !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY)
            {
                return None;
            }
            dictionary = Some(plain(buf)?);
            continue;
        }
        let DataPage {
            repetition,
            definition,
            encoding,
            values: buf,
            levels: count,
        } = split_page(&page)?;
        let position = values.len();
        if !row_starts(repetition, count, position, &mut offsets) || !all_defined(definition, count)
        {
            return None;
        }
        match encoding {
            Encoding::PLAIN => {
                let page_values = plain(buf)?;
                if page_values.len() != count {
                    return None;
                }
                values.extend_from_slice(&page_values);
            }
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                let dictionary = dictionary.as_deref()?;
                let (&width, indices) = buf.split_first()?;
                values.reserve(count);
                if !dictionary_values(indices, usize::from(width), count, dictionary, &mut values) {
                    return None;
                }
            }
            _ => return None,
        }
    }
    if offsets.len() != rows || offsets.first().is_some_and(|&first| first != 0) {
        return None;
    }
    offsets.push(values.len());
    Some((values, offsets))
}

/// Appends to `starts` the positions (counted from the row group's first
/// value; this page's first is `position`) of the repetition levels 0,
/// bit width 1, among `count` levels: where rows start.
fn row_starts(bytes: &[u8], count: usize, position: usize, starts: &mut Vec<usize>) -> bool {
    let mut at = position;
    walk_levels(bytes, count, |run| {
        match run {
            Run::Repeated { value: 0, levels } => starts.extend(at..at + levels),
            Run::Repeated { value: 1, .. } => {}
            Run::Repeated { .. } => return false,
            Run::Packed { bytes, levels } => {
                for (index, &byte) in bytes[..levels.div_ceil(8)].iter().enumerate() {
                    let valid = low_bits(levels - index * 8);
                    let mut zeros = !byte & valid;
                    while zeros != 0 {
                        starts.push(at + index * 8 + zeros.trailing_zeros() as usize);
                        zeros &= zeros - 1;
                    }
                }
            }
        }
        at += match run {
            Run::Repeated { levels, .. } | Run::Packed { levels, .. } => levels,
        };
        true
    })
}

/// Decodes `count` dictionary indices of bit width `width` (Parquet's
/// RLE/bit-packed hybrid) and appends their dictionary values to `out`.
/// False on an index outside the dictionary or bytes that end early.
fn dictionary_values(
    mut bytes: &[u8],
    width: usize,
    count: usize,
    dictionary: &[i64],
    out: &mut Vec<i64>,
) -> bool {
    if width > 32 {
        return false;
    }
    let mask = if width == 0 {
        0
    } else {
        u64::MAX >> (64 - width)
    };
    let mut left = count;
    while left > 0 {
        let Some(header) = uleb128(&mut bytes) else {
            return false;
        };
        let Ok(length) = usize::try_from(header >> 1) else {
            return false;
        };
        if header & 1 == 1 {
            let Some(size) = length.checked_mul(width) else {
                return false;
            };
            let Some((run, rest)) = bytes.split_at_checked(size) else {
                return false;
            };
            bytes = rest;
            let levels = left.min(length.saturating_mul(8));
            for index in 0..levels {
                let bit = index * width;
                let start = bit / 8;
                let mut word = [0u8; 8];
                let end = (start + 8).min(run.len());
                word[..end - start].copy_from_slice(&run[start..end]);
                let key = (u64::from_le_bytes(word) >> (bit % 8)) & mask;
                let Some(&value) = dictionary.get(key as usize) else {
                    return false;
                };
                out.push(value);
            }
            left -= levels;
        } else {
            let size = width.div_ceil(8);
            let Some((value, rest)) = bytes.split_at_checked(size) else {
                return false;
            };
            bytes = rest;
            let mut word = [0u8; 8];
            word[..size].copy_from_slice(value);
            let Some(&value) = dictionary.get(u64::from_le_bytes(word) as usize) else {
                return false;
            };
            let levels = left.min(length);
            out.extend(std::iter::repeat_n(value, levels));
            left -= levels;
        }
    }
    true
}

/// The `N` byte streams of `count` values in BYTE_STREAM_SPLIT order.
fn streams<const N: usize>(buf: &[u8], count: usize) -> [&[u8]; N] {
    std::array::from_fn(|stream| &buf[stream * count..(stream + 1) * count])
}

/// A V1 page's levels: a 4-byte little-endian length, then that many bytes.
fn length_prefixed(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = buf.split_first_chunk::<4>()?;
    rest.split_at_checked(u32::from_le_bytes(*length) as usize)
}

/// An unsigned LEB128 integer (run headers of the level encoding).
fn uleb128(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// One run of levels of bit width 1.
enum Run<'a> {
    /// `levels` times `value`.
    Repeated { value: u8, levels: usize },
    /// `levels` of the bits of `bytes`, least significant first (the rest
    /// is padding).
    Packed { bytes: &'a [u8], levels: usize },
}

/// Walks the runs of `count` levels of bit width 1 in Parquet's
/// RLE/bit-packed hybrid encoding. False when the bytes end early or
/// `visit` answers false.
fn walk_levels(mut bytes: &[u8], count: usize, mut visit: impl FnMut(Run<'_>) -> bool) -> bool {
    let mut left = count;
    while left > 0 {
        let Some(header) = uleb128(&mut bytes) else {
            return false;
        };
        let Ok(length) = usize::try_from(header >> 1) else {
            return false;
        };
        if header & 1 == 1 {
            // `length` groups of 8 levels, one byte each at bit width 1.
            let Some((run, rest)) = bytes.split_at_checked(length) else {
                return false;
            };
            bytes = rest;
            let levels = left.min(length.saturating_mul(8));
            if !visit(Run::Packed { bytes: run, levels }) {
                return false;
            }
            left -= levels;
        } else {
            let Some((&value, rest)) = bytes.split_first() else {
                return false;
            };
            bytes = rest;
            let levels = left.min(length);
            if !visit(Run::Repeated { value, levels }) {
                return false;
            }
            left -= levels;
        }
    }
    true
}

/// The mask of the first `bits` bits of a byte.
fn low_bits(bits: usize) -> u8 {
    if bits >= 8 { 0xff } else { (1u8 << bits) - 1 }
}

/// Whether `count` definition levels (bit width 1) are all 1: no null value.
fn all_defined(bytes: &[u8], count: usize) -> bool {
    walk_levels(bytes, count, |run| match run {
        Run::Repeated { value, .. } => value == 1,
        Run::Packed { bytes, levels } => {
            let full = levels / 8;
            let rest = low_bits(levels % 8);
            bytes[..full].iter().all(|&byte| byte == 0xff)
                && (levels % 8 == 0 || bytes[full] & rest == rest)
        }
    })
}

/// The repetition levels of rows of `width` values: 0 at the first value
/// of each row, 1 elsewhere.
struct RowPattern {
    width: usize,
    /// The 8 levels from phase `p` (the position modulo `width`) on, as a
    /// byte of bit-packed levels.
    bytes: Vec<u8>,
    /// The phase 8 levels after phase `p`.
    next: Vec<usize>,
}

impl RowPattern {
    fn new(width: usize) -> Self {
        let bytes = (0..width)
            .map(|phase| {
                (0..8)
                    .filter(|bit| (phase + bit) % width != 0)
                    .fold(0u8, |byte, bit| byte | (1 << bit))
            })
            .collect();
        let next = (0..width).map(|phase| (phase + 8) % width).collect();
        Self { width, bytes, next }
    }

    /// Whether the `count` repetition levels in `bytes`, the first at
    /// `position` (counted from the row group's first value), fit the pattern.
    fn check(&self, bytes: &[u8], count: usize, position: usize) -> bool {
        let width = self.width;
        let mut phase = position % width;
        walk_levels(bytes, count, |run| match run {
            Run::Repeated { value, levels } => {
                let fits = match value {
                    // Only first values of rows: one, or all of them when
                    // rows hold one value.
                    0 => levels == 0 || width == 1 || (levels == 1 && phase == 0),
                    // No first value of a row among them.
                    1 => levels == 0 || (phase != 0 && phase + levels <= width),
                    _ => false,
                };
                phase = (phase + levels) % width;
                fits
            }
            Run::Packed { bytes, levels } => {
                let full = levels / 8;
                let mut at = phase;
                for &byte in &bytes[..full] {
                    if byte != self.bytes[at] {
                        return false;
                    }
                    at = self.next[at];
                }
                let rest = low_bits(levels % 8);
                if levels % 8 != 0 && (bytes[full] ^ self.bytes[at]) & rest != 0 {
                    return false;
                }
                phase = (phase + levels) % width;
                true
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-packs levels (bit width 1) as one hybrid run.
    fn packed(levels: &[u8]) -> Vec<u8> {
        let mut header = (levels.len().div_ceil(8) << 1) | 1;
        let mut out = Vec::new();
        while header >= 0x80 {
            out.push((header as u8 & 0x7f) | 0x80);
            header >>= 7;
        }
        out.push(header as u8);
        for group in levels.chunks(8) {
            out.push(
                group
                    .iter()
                    .enumerate()
                    .fold(0u8, |byte, (bit, &level)| byte | (level << bit)),
            );
        }
        out
    }

    fn rep_levels(rows: usize, width: usize) -> Vec<u8> {
        (0..rows * width)
            .map(|index| u8::from(index % width != 0))
            .collect()
    }

    #[test]
    fn row_patterns_of_several_widths_are_recognised_and_broken_ones_rejected() {
        for width in [1usize, 2, 3, 7, 8, 9, 16, 17] {
            let pattern = RowPattern::new(width);
            for rows in [1usize, 2, 5, 63, 64, 65] {
                let levels = rep_levels(rows, width);
                assert!(
                    pattern.check(&packed(&levels), levels.len(), 0),
                    "{width} {rows}"
                );
                // A row one value short or long.
                if width > 1 {
                    let mut broken = levels.clone();
                    let last = broken.len() - 1;
                    broken[last] = 0;
                    assert!(!pattern.check(&packed(&broken), broken.len(), 0));
                }
                let mut broken = levels.clone();
                broken[0] = 1;
                assert!(!pattern.check(&packed(&broken), broken.len(), 0));
            }
        }
        // Repeated runs (header: length << 1, then the value): rows [0, 1, 1]
        // of width 3.
        let pattern = RowPattern::new(3);
        assert!(pattern.check(&[2, 0, 4, 1, 2, 0, 4, 1], 6, 0));
        assert!(
            !pattern.check(&[4, 1, 2, 0, 4, 1], 5, 0),
            "a row group starting mid-row"
        );
        assert!(
            pattern.check(&[4, 1, 2, 0, 4, 1], 5, 1),
            "a page starting mid-row"
        );
        assert!(!pattern.check(&[6, 1], 3, 1), "a row of four values");
        assert!(!pattern.check(&[4, 1], 3, 1), "bytes end early");
    }

    #[test]
    fn dictionary_indices_of_any_width_and_bad_ones() {
        let dictionary: Vec<i64> = (0..8).map(|value| value * 10).collect();
        // Width 3: a bit-packed group of 0..8, then a run of five 6s.
        let mut bytes = vec![3u8];
        let packed = (0..8u32).fold(0u32, |word, index| word | (index << (3 * index)));
        bytes.extend_from_slice(&packed.to_le_bytes()[..3]);
        bytes.extend_from_slice(&[5 << 1, 6]);
        let mut out = Vec::new();
        assert!(dictionary_values(&bytes, 3, 13, &dictionary, &mut out));
        assert_eq!(out, [0, 10, 20, 30, 40, 50, 60, 70, 60, 60, 60, 60, 60]);
        // Index 9 is outside the dictionary; bytes that end early.
        assert!(!dictionary_values(&[2, 9], 4, 1, &dictionary, &mut out));
        assert!(!dictionary_values(&[3, 0], 3, 9, &dictionary, &mut out));
    }

    #[test]
    fn row_starts_are_the_zero_repetition_levels() {
        let levels = [0u8, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1];
        let mut starts = Vec::new();
        assert!(row_starts(&packed(&levels), levels.len(), 5, &mut starts));
        assert_eq!(starts, [5, 8, 9, 14]);
        let mut starts = Vec::new();
        assert!(row_starts(&[6, 0, 4, 1], 5, 0, &mut starts));
        assert_eq!(starts, [0, 1, 2]);
    }

    #[test]
    fn definition_levels_must_all_be_one() {
        assert!(all_defined(&[200, 1, 1], 100));
        assert!(all_defined(&packed(&[1; 13]), 13));
        let mut levels = [1u8; 13];
        levels[12] = 0;
        assert!(!all_defined(&packed(&levels), 13));
        assert!(!all_defined(&[200, 0], 100));
        assert!(!all_defined(&[], 1));
    }
}
