//! Power in memory: one fixed-point unit, whole watts in a `u64`.
//!
//! The wire carries power as an `f64` of kW (design doc, "Wire contract"); every program
//! converts it once, with [`Power::from_kw`], and does its arithmetic in whole watts, so
//! sums are exact (7.4 kW booked and freed again is 0 W, not 1e-15 kW) and a capacity edge
//! is decided without rounding noise. The conversion rounds *up* to the next whole watt, so
//! a reservation or a booking never counts less than was asked: any positive power is at
//! least 1 W. A value within a few ulps of a whole watt is taken as that watt, so that the
//! binary form of a decimal kW (7.4 kW is 7400.000000000001 W after the product) does not
//! cost a watt.
//!
//! Invariant: a `Power` is at most [`Power::MAX`] (10⁹ kW) when it comes from the wire, so
//! sums of millions of them still fit a `u64`; [`Power::checked_add`] and the saturating
//! operations cover the rest.

use std::fmt;

/// Power as whole watts. Ordered, hashable and exact; see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Power(u64);

/// Why a kW value is not a [`Power`].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum PowerError {
    #[error("power {0} kW is not a finite number")]
    NotFinite(f64),
    #[error("power {0} kW is negative")]
    Negative(f64),
    #[error("power {kw} kW is larger than the maximum {max_kw} kW")]
    TooLarge { kw: f64, max_kw: f64 },
}

impl Power {
    /// No power.
    pub const ZERO: Power = Power(0);
    /// The largest power [`Power::from_kw`] accepts: 10⁹ kW (1 TW), far above any
    /// substation and small enough that 10⁷ of them still add up in a `u64`.
    pub const MAX: Power = Power(1_000_000_000_000);
    /// [`Power::MAX`] in kW.
    pub const MAX_KW: f64 = 1e9;

    /// `watts` whole watts.
    pub const fn from_watts(watts: u64) -> Power {
        Power(watts)
    }

    /// `kw` kilowatts, rounded up to a whole watt. Rejects NaN, infinities, negative
    /// values and values over [`Power::MAX_KW`].
    pub fn from_kw(kw: f64) -> Result<Power, PowerError> {
        if !kw.is_finite() {
            return Err(PowerError::NotFinite(kw));
        }
        if kw < 0.0 {
            return Err(PowerError::Negative(kw));
        }
        if kw > Power::MAX_KW {
            return Err(PowerError::TooLarge {
                kw,
                max_kw: Power::MAX_KW,
            });
        }
        let watts = kw * 1000.0;
        let nearest = watts.round();
        let whole = if (watts - nearest).abs() <= nearest * 4.0 * f64::EPSILON {
            nearest
        } else {
            watts.ceil()
        };
        // Finite, in [0, 1e12]: the cast is exact.
        Ok(Power(whole as u64))
    }

    /// Whole watts.
    pub const fn as_watts(self) -> u64 {
        self.0
    }

    /// Kilowatts, as the wire carries them (exact for every power up to 2⁵³ W).
    pub fn as_kw(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: Power) -> Option<Power> {
        match self.0.checked_add(other.0) {
            Some(sum) => Some(Power(sum)),
            None => None,
        }
    }

    /// `self + other`, at most `u64::MAX` watts.
    pub const fn saturating_add(self, other: Power) -> Power {
        Power(self.0.saturating_add(other.0))
    }

    /// `self - other`, at least zero.
    pub const fn saturating_sub(self, other: Power) -> Power {
        Power(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Power {
    /// In kW, with no more digits than needed: `11 kW`, `7.4 kW`, `0.001 kW`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} kW", self.as_kw())
    }
}

impl std::iter::Sum for Power {
    /// The saturating sum.
    fn sum<I: Iterator<Item = Power>>(iter: I) -> Power {
        iter.fold(Power::ZERO, Power::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_kilowatts_become_the_watts_they_name() {
        for (kw, watts) in [
            (0.0, 0),
            (3.7, 3700),
            (7.4, 7400),
            (11.0, 11_000),
            (22.2, 22_200),
            (1.1, 1100),
            (4.35, 4350),
            (150.0, 150_000),
            (1e9, 1_000_000_000_000),
        ] {
            assert_eq!(Power::from_kw(kw).unwrap().as_watts(), watts, "{kw} kW");
        }
    }

    #[test]
    fn a_fraction_of_a_watt_rounds_up() {
        assert_eq!(Power::from_kw(0.0000001).unwrap().as_watts(), 1);
        assert_eq!(Power::from_kw(7.4001).unwrap().as_watts(), 7401);
        assert_eq!(Power::from_kw(11.0005).unwrap().as_watts(), 11_001);
    }

    #[test]
    fn nan_infinite_negative_and_huge_values_are_rejected() {
        assert!(matches!(
            Power::from_kw(f64::NAN),
            Err(PowerError::NotFinite(_))
        ));
        assert!(matches!(
            Power::from_kw(f64::INFINITY),
            Err(PowerError::NotFinite(_))
        ));
        assert_eq!(Power::from_kw(-0.5), Err(PowerError::Negative(-0.5)));
        assert!(matches!(
            Power::from_kw(1.000001e9),
            Err(PowerError::TooLarge { .. })
        ));
    }

    #[test]
    fn sums_are_exact_and_saturate_at_the_ends() {
        let p = Power::from_kw(7.4).unwrap();
        let three: Power = [p, p, p].into_iter().sum();
        assert_eq!(three.as_kw(), 22.2);
        assert_eq!(
            three.saturating_sub(p).saturating_sub(p).saturating_sub(p),
            Power::ZERO
        );
        assert_eq!(Power::ZERO.saturating_sub(p), Power::ZERO);
        let top = Power::from_watts(u64::MAX);
        assert_eq!(top.checked_add(Power::from_watts(1)), None);
        assert_eq!(top.saturating_add(p), top);
        assert_eq!(p.checked_add(p), Some(Power::from_watts(14_800)));
    }

    #[test]
    fn display_is_in_kilowatts_without_trailing_zeros() {
        assert_eq!(Power::from_watts(11_000).to_string(), "11 kW");
        assert_eq!(Power::from_watts(7400).to_string(), "7.4 kW");
        assert_eq!(Power::from_watts(1).to_string(), "0.001 kW");
        assert_eq!(Power::ZERO.to_string(), "0 kW");
    }

    #[test]
    fn order_follows_the_watts() {
        assert!(Power::from_watts(3700) < Power::from_kw(7.4).unwrap());
        assert_eq!(Power::default(), Power::ZERO);
    }

    proptest::proptest! {
        #[test]
        fn from_kw_never_counts_less_than_asked_nor_a_watt_more(kw in 0.0..1e9f64) {
            let watts = Power::from_kw(kw).unwrap().as_watts() as f64;
            let asked = kw * 1000.0;
            proptest::prop_assert!(watts >= asked * (1.0 - 1e-15));
            proptest::prop_assert!(watts < asked + 1.0);
        }

        #[test]
        fn whole_watts_survive_the_trip_through_kilowatts(watts in 0..=1_000_000_000_000u64) {
            let p = Power::from_watts(watts);
            proptest::prop_assert_eq!(Power::from_kw(p.as_kw()), Ok(p));
        }
    }
}
