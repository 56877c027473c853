//! BENCHMARKS.md as a head and `## ` sections, so that a run writes its own
//! sections and leaves every other one as it was recorded: `--write --only
//! PART` puts that part's sections in place of their old text (or where they
//! belong, the first time), and a full `--write` keeps the sections it does
//! not measure (the soak, which runs only on its own).
//!
//! A section is its `## ` heading line and everything up to the next one;
//! an italic paragraph (`_..._`) right before a heading belongs to the
//! section after it: it says when that section was measured.

/// The headings in the order the document holds them. A heading that is
/// not here keeps its place, and is never a position for a new section.
pub const ORDER: &[&str] = &[
    "## Per-packet cost of the XDP program",
    crate::fuzz::HEADING,
    "## End to end: HTTP through each load balancer",
    "## Memory",
    crate::newconn::HEADING,
    crate::synflood::HEADING,
    "## Health checks",
    "## Failover",
    "## No spurious takeover under CPU load",
    "## Chaos soak",
    "## Status and metrics at any table size",
];

#[derive(Clone, Debug, PartialEq, Eq)]
struct Section {
    heading: String,
    /// The section's text as written: its preface, if any, the heading,
    /// the body, and the blank lines before the next section.
    text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    head: String,
    sections: Vec<Section>,
}

/// The `## ` heading of a section's text (its first such line).
fn heading_of(text: &str) -> Option<&str> {
    text.lines()
        .find(|line| line.starts_with("## "))
        .map(str::trim_end)
}

fn rank(heading: &str) -> Option<usize> {
    ORDER.iter().position(|h| *h == heading)
}

/// Where the italic paragraph at the end of `text` starts, if it ends with one.
fn trailing_preface(text: &str) -> Option<usize> {
    let body = text.trim_end_matches('\n');
    let start = body.rfind("\n\n").map_or(0, |i| i + 2);
    let paragraph = body[start..].trim();
    (paragraph.len() > 1 && paragraph.starts_with('_') && paragraph.ends_with('_')).then_some(start)
}

impl Document {
    #[must_use]
    pub fn parse(text: &str) -> Self {
        // Byte offsets of the heading lines.
        let mut starts = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if line.starts_with("## ") {
                starts.push(offset);
            }
            offset += line.len();
        }
        // Each section starts at its heading or at the preface before it.
        let mut cuts = Vec::with_capacity(starts.len());
        let mut previous = 0;
        for &start in &starts {
            let before = &text[previous..start];
            cuts.push(trailing_preface(before).map_or(start, |p| previous + p));
            previous = start;
        }
        let head = text[..cuts.first().copied().unwrap_or(text.len())].to_owned();
        let sections = cuts
            .iter()
            .enumerate()
            .map(|(i, &cut)| {
                let end = cuts.get(i + 1).copied().unwrap_or(text.len());
                let text = text[cut..end].to_owned();
                Section {
                    heading: heading_of(&text).unwrap_or_default().to_owned(),
                    text,
                }
            })
            .collect();
        Self { head, sections }
    }

    #[must_use]
    pub fn render(&self) -> String {
        let mut out = self.head.clone();
        for section in &self.sections {
            // A blank line before every section, whatever the text before
            // it ended with.
            if !out.is_empty() {
                while !out.ends_with("\n\n") {
                    out.push('\n');
                }
            }
            out.push_str(&section.text);
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }

    #[cfg(test)]
    fn headings(&self) -> Vec<&str> {
        self.sections.iter().map(|s| s.heading.as_str()).collect()
    }

    /// Puts `text` (a section: an optional preface, a `## ` heading, its
    /// body) in place of the section with the same heading, or, the first
    /// time, before the first section that [`ORDER`] puts after it (at the
    /// end if none). Fails on text without a heading.
    pub fn put(&mut self, text: &str) -> anyhow::Result<()> {
        let heading = heading_of(text)
            .ok_or_else(|| anyhow::anyhow!("a section without a `## ` heading: {:?}", text.lines().next()))?
            .to_owned();
        let section = Section {
            heading: heading.clone(),
            text: text.trim_end_matches('\n').to_owned() + "\n",
        };
        if let Some(old) = self.sections.iter_mut().find(|s| s.heading == heading) {
            *old = section;
            return Ok(());
        }
        let at = rank(&heading).and_then(|mine| {
            self.sections
                .iter()
                .position(|s| rank(&s.heading).is_some_and(|theirs| theirs > mine))
        });
        self.sections.insert(at.unwrap_or(self.sections.len()), section);
        Ok(())
    }

    /// Keeps the sections of `old` this document lacks, each where [`ORDER`]
    /// puts it.
    pub fn keep_missing_from(&mut self, old: &Document) {
        for section in &old.sections {
            if section.heading.is_empty() || self.sections.iter().any(|s| s.heading == section.heading) {
                continue;
            }
            // Only fails on a section without a heading, skipped above.
            let _ = self.put(&section.text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "# Benchmarks\n\nProduced by a run.\n\n\
        ## Per-packet cost of the XDP program\n\nmicro text\n\n\
        ## End to end: HTTP through each load balancer\n\ne2e\n\n\
        ## Failover\n\nfailover text\n\n\
        _Measured separately on another day:_\n\n\
        ## No spurious takeover under CPU load\n\nsoak text\n";

    #[test]
    fn parsing_and_rendering_keep_the_text() {
        let doc = Document::parse(OLD);
        assert_eq!(doc.render(), OLD);
        assert_eq!(
            doc.headings(),
            [
                "## Per-packet cost of the XDP program",
                "## End to end: HTTP through each load balancer",
                "## Failover",
                "## No spurious takeover under CPU load"
            ]
        );
        // The preface goes with the section after it.
        assert!(doc.sections[3].text.starts_with("_Measured separately"));
        assert!(doc.sections[2].text.ends_with("failover text\n\n"));
    }

    #[test]
    fn a_section_replaces_its_old_text_and_nothing_else() {
        let mut doc = Document::parse(OLD);
        doc.put("_Measured alone:_\n\n## End to end: HTTP through each load balancer\n\nnew e2e\n")
            .unwrap();
        let text = doc.render();
        assert_eq!(
            text,
            OLD.replace(
                "## End to end: HTTP through each load balancer\n\ne2e\n",
                "_Measured alone:_\n\n## End to end: HTTP through each load balancer\n\nnew e2e\n"
            )
        );
    }

    #[test]
    fn a_new_section_goes_where_the_order_puts_it() {
        let mut doc = Document::parse(OLD);
        doc.put(&format!("{}\n\nnew connections\n", crate::newconn::HEADING))
            .unwrap();
        doc.put(&format!("{}\n\nfuzz\n", crate::fuzz::HEADING)).unwrap();
        let headings = doc.headings();
        assert_eq!(headings[1], crate::fuzz::HEADING);
        assert_eq!(headings[3], crate::newconn::HEADING);
        assert_eq!(headings[4], "## Failover");
        // Before the soak's preface, not between it and its heading.
        let text = doc.render();
        assert!(text.contains("e2e\n\n## New connections"));
        assert!(text.contains("failover text\n\n_Measured separately on another day:_\n\n## No spurious"));
        // An unknown heading goes last.
        doc.put("## Something else\n\nx").unwrap();
        assert!(doc.render().ends_with("soak text\n\n## Something else\n\nx\n"));
        assert!(doc.put("no heading").is_err());
    }

    #[test]
    fn a_full_write_keeps_what_it_did_not_measure() {
        let old = Document::parse(OLD);
        let mut new = Document::parse(
            "# Benchmarks\n\nProduced anew.\n\n## Per-packet cost of the XDP program\n\nnew micro\n\n\
             ## End to end: HTTP through each load balancer\n\nnew e2e\n\n## Failover\n\nnew failover\n",
        );
        new.keep_missing_from(&old);
        let text = new.render();
        assert!(text.ends_with(
            "new failover\n\n_Measured separately on another day:_\n\n## No spurious takeover under CPU load\n\nsoak text\n"
        ));
        assert!(!text.contains("micro text"));
    }

    #[test]
    fn the_real_file_parses_into_its_sections() {
        let path = crate::root().join("BENCHMARKS.md");
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let doc = Document::parse(&text);
        assert_eq!(doc.render(), text);
        for heading in doc.headings() {
            assert!(rank(heading).is_some(), "{heading} is not in ORDER");
        }
    }
}
