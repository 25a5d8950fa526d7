//! Network quality levels (ZEGO's `onNetworkQuality`): each second's round trip, loss and
//! jitter of every publisher (upstream) and player (downstream) give a level; every two seconds
//! the worst level of each direction is reported. Pure arithmetic; the connection task feeds it.

use std::time::{Duration, Instant};

use onair_protocol::messages::QualityLevel;

/// How often a level is reported.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// The upper bounds of each level, worst dimension wins: (round trip ms, loss share, jitter
/// ms). Below all three of a row is that row's level; above the last row is Die.
pub const THRESHOLDS: [(QualityLevel, f64, f64, f64); 4] = [
    (QualityLevel::Excellent, 100.0, 0.01, 20.0),
    (QualityLevel::Good, 200.0, 0.03, 50.0),
    (QualityLevel::Medium, 400.0, 0.10, 100.0),
    (QualityLevel::Bad, 800.0, 0.30, 200.0),
];

/// One second of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkSample {
    /// Round trip, ms (0: not measured yet, counts as fine).
    pub rtt_ms: f64,
    /// Share of packets lost on the way (before any repair), 0–1.
    pub loss: f64,
    /// Interarrival jitter, ms (0 where not known, e.g. upstream).
    pub jitter_ms: f64,
    /// Whether any media went through in the second (none: Die).
    pub flowing: bool,
}

/// The level of one second of a link.
pub fn level(s: LinkSample) -> QualityLevel {
    if !s.flowing {
        return QualityLevel::Die;
    }
    THRESHOLDS
        .iter()
        .find(|(_, rtt, loss, jitter)| s.rtt_ms < *rtt && s.loss < *loss && s.jitter_ms < *jitter)
        .map_or(QualityLevel::Die, |(l, ..)| *l)
}

/// Share of `lost` in `lost + received` (0 when nothing was expected).
pub fn loss_share(lost: u64, received: u64) -> f64 {
    let expected = lost + received;
    if expected == 0 {
        0.0
    } else {
        lost as f64 / expected as f64
    }
}

/// The worst level of each direction over the current interval.
#[derive(Debug, Default)]
pub struct NetworkQualityMeter {
    upstream: Option<QualityLevel>,
    downstream: Option<QualityLevel>,
    last: Option<Instant>,
}

impl NetworkQualityMeter {
    /// A second of a publisher.
    pub fn upstream(&mut self, s: LinkSample) {
        let l = level(s);
        self.upstream = Some(self.upstream.map_or(l, |u| u.max(l)));
    }

    /// A second of a player.
    pub fn downstream(&mut self, s: LinkSample) {
        let l = level(s);
        self.downstream = Some(self.downstream.map_or(l, |d| d.max(l)));
    }

    /// Every [`INTERVAL`]: (upstream, downstream) over it — Unknown for a direction with no
    /// link — and a new interval begins.
    pub fn poll(&mut self, now: Instant) -> Option<(QualityLevel, QualityLevel)> {
        let last = *self.last.get_or_insert(now);
        if now.saturating_duration_since(last) < INTERVAL {
            return None;
        }
        self.last = Some(now);
        Some((
            self.upstream.take().unwrap_or(QualityLevel::Unknown),
            self.downstream.take().unwrap_or(QualityLevel::Unknown),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rtt_ms: f64, loss: f64, jitter_ms: f64) -> LinkSample {
        LinkSample {
            rtt_ms,
            loss,
            jitter_ms,
            flowing: true,
        }
    }

    #[test]
    fn the_worst_dimension_decides() {
        assert_eq!(level(s(5.0, 0.0, 1.0)), QualityLevel::Excellent);
        assert_eq!(level(s(150.0, 0.0, 1.0)), QualityLevel::Good);
        assert_eq!(level(s(5.0, 0.05, 1.0)), QualityLevel::Medium);
        assert_eq!(level(s(5.0, 0.0, 150.0)), QualityLevel::Bad);
        assert_eq!(level(s(5.0, 0.2, 1.0)), QualityLevel::Bad);
        assert_eq!(level(s(5.0, 0.5, 1.0)), QualityLevel::Die);
        assert_eq!(level(s(900.0, 0.0, 1.0)), QualityLevel::Die);
        assert_eq!(
            level(LinkSample {
                flowing: false,
                ..s(1.0, 0.0, 0.0)
            }),
            QualityLevel::Die
        );
        assert_eq!(loss_share(0, 0), 0.0);
        assert_eq!(loss_share(1, 3), 0.25);
    }

    #[test]
    fn each_interval_reports_its_worst_second_per_direction() {
        let t = Instant::now();
        let mut m = NetworkQualityMeter::default();
        assert_eq!(m.poll(t), None);
        m.upstream(s(5.0, 0.0, 0.0));
        m.upstream(s(5.0, 0.05, 0.0));
        assert_eq!(m.poll(t + Duration::from_secs(1)), None);
        assert_eq!(
            m.poll(t + INTERVAL),
            Some((QualityLevel::Medium, QualityLevel::Unknown))
        );
        m.downstream(s(5.0, 0.0, 0.0));
        assert_eq!(
            m.poll(t + INTERVAL * 2),
            Some((QualityLevel::Unknown, QualityLevel::Excellent))
        );
    }
}
