{#
    Passes when no two rows share the same values of `combination_of_columns` (a composite key).
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

with

keys as (
    select
        {{ combination_of_columns | join(',\n        ') }}
    from {{ model }}
),

duplicates as (
    select
        {{ combination_of_columns | join(',\n        ') }},
        count(*) as n_rows
    from keys
    group by all
    having count(*) > 1
)

select * from duplicates

{% endtest %}
