//! The per-epoch progress bar of [`super::run`]: indicatif's with the `progress` feature; without
//! it nothing is drawn (the line each epoch prints at its end stays).

/// A bar over one epoch's training steps, on stderr.
pub(super) struct EpochBar {
    #[cfg(feature = "progress")]
    bar: indicatif::ProgressBar,
}

impl EpochBar {
    /// A bar of `steps` steps labelled `epoch/epochs` (1-based).
    pub(super) fn new(steps: usize, epoch: usize, epochs: usize) -> Self {
        #[cfg(feature = "progress")]
        {
            use indicatif::{ProgressBar, ProgressStyle};
            let bar = ProgressBar::new(steps as u64).with_style(
                ProgressStyle::with_template("epoch {msg} {bar:30} {pos}/{len} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(format!("{epoch}/{epochs}"));
            EpochBar { bar }
        }
        #[cfg(not(feature = "progress"))]
        {
            let _ = (steps, epoch, epochs);
            EpochBar {}
        }
    }

    /// One step done.
    pub(super) fn inc(&self) {
        #[cfg(feature = "progress")]
        self.bar.inc(1);
    }

    /// Removes the bar (before the epoch's line or an error).
    pub(super) fn finish_and_clear(&self) {
        #[cfg(feature = "progress")]
        self.bar.finish_and_clear();
    }
}
